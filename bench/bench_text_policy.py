"""How many pages each --text-layer-policy sends to the model (issue #15), over the PDF corpus.

For every page of every PDF in `<corpus>/pdf/good` (rendered as vlbeam renders it:
`render_pdf_page` with `RenderConfig()` defaults), the pure checks of
`vlbeam.transforms.media` are run: `pdf_render.page_image_coverage`, `blank_pages.measure_blank`
(on the encoded page, as a stage would get it) and `text_layer.text_layer_usable`; then
`decide_page` per policy:

- `ocr, no blank skip`: every page to the model (vlbeam before #15),
- `ocr`: blank pages skip the model,
- `prefer`: blank pages skip, a usable text layer replaces OCR,
- `compare`: like `ocr` for model calls; pages with a text layer get an agreement score.

Reported: per file and in total, pages, blank pages, pages with a usable text layer, model calls
per policy and their share of all pages; why `prefer` refused text layers; the cost of the checks
per page next to the render's; and (unless `--no-model`) the tiny random Qwen3-VL's `generate`
time per page on a sample of the pages, from which the model time each policy saves is
estimated (avoided calls x mean time per call, minus the checks' cost as a stage would pay it:
pixels are looked at only for pages without a text layer).

`--end-to-end FILE...`: the saving measured through the job itself: `vlbeam run
--model tiny-random --text-layer-policy ocr` against `prefer` on the given corpus PDFs (relative
to `<corpus>/pdf/good`), wall time and the summary's model calls avoided, each run in a fresh
process, the two policies alternated.

Run: `.venv/bin/python bench/bench_text_policy.py [--quick] [--no-model] [--corpus DIR]
[--out FILE] [--max-pages-per-file N] [--model-pages N] [--max-new-tokens N]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from vlbeam.schemas.config import TEXT_LAYER_POLICIES, RenderConfig
from vlbeam.transforms.media import text_layer
from vlbeam.transforms.media.blank_pages import measure_blank
from vlbeam.transforms.media.pdf_render import open_pdf, page_image_coverage, render_pdf_page
from vlbeam.transforms.media.text_layer import decide_page, text_layer_usable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "bench_text_policy.json"
POLICIES = ("ocr, no blank skip", "ocr", "prefer", "compare")


def corpus_root(arg: str | None) -> Path:
    root = Path(arg or os.environ.get("VLBEAM_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
    if not (root / "pdf" / "good").is_dir():
        sys.exit(f"no corpus at {root} (pass --corpus DIR or set VLBEAM_CORPUS)")
    return root


def check_pages(pdf: Path, cfg: RenderConfig, max_pages: int | None) -> list[dict]:
    """Render each page and run the checks; one record per page."""
    doc = open_pdf(pdf.read_bytes())
    records = []
    try:
        n = len(doc) if max_pages is None else min(len(doc), max_pages)
        for number in range(1, n + 1):
            t0 = time.perf_counter()
            rendered = render_pdf_page(doc, number, cfg)
            t1 = time.perf_counter()
            page = doc[number - 1]
            try:
                coverage = page_image_coverage(page)
            finally:
                page.close()
            t2 = time.perf_counter()
            blank = measure_blank(rendered.image, rendered.text_layer)
            t3 = time.perf_counter()
            usable, reason = text_layer_usable(
                rendered.text_layer, rendered.width_px, rendered.height_px, coverage
            )
            t4 = time.perf_counter()
            decisions = {
                policy: decide_page(
                    policy,
                    blank=blank.blank,
                    text_layer=rendered.text_layer,
                    width_px=rendered.width_px,
                    height_px=rendered.height_px,
                    image_coverage=coverage,
                )
                for policy in TEXT_LAYER_POLICIES
            }
            records.append(
                {
                    "file": pdf.name,
                    "page": number,
                    "width_px": rendered.width_px,
                    "height_px": rendered.height_px,
                    "text_layer_chars": blank.text_layer_chars,
                    "image_coverage": round(coverage, 4),
                    "blank": blank.blank,
                    "render_blank": blank.render_blank,
                    "ink_fraction": round(blank.ink_fraction, 6),
                    "longest_mark_px": blank.longest_mark,
                    "noise": round(blank.noise, 2),
                    "text_layer_usable": usable,
                    "text_layer_reason": reason,
                    "calls": {
                        "ocr, no blank skip": True,
                        **{p: d.call_model for p, d in decisions.items()},
                    },
                    "rules": {p: d.rule for p, d in decisions.items()},
                    "compare": decisions["compare"].compare,
                    "image": rendered.image,  # dropped before writing JSON
                    "seconds": {
                        "render": t1 - t0,
                        "image_coverage": t2 - t1,
                        "measure_blank": t3 - t2,
                        "text_layer_usable": t4 - t3,
                    },
                }
            )
    finally:
        doc.close()
    return records


def summarize(records: list[dict]) -> dict:
    n = len(records)
    calls = {p: sum(r["calls"][p] for r in records) for p in POLICIES}
    return {
        "pages": n,
        "blank": sum(r["blank"] for r in records),
        "text_layer": sum(r["text_layer_chars"] > 0 for r in records),
        "text_layer_usable": sum(r["text_layer_usable"] for r in records),
        "model_calls": calls,
        "share_to_model": {p: calls[p] / n if n else 0.0 for p in POLICIES},
        "compared": sum(r["compare"] for r in records),
    }


def time_model(records: list[dict], pages: int, max_new_tokens: int) -> dict:
    """Mean `generate` seconds per page of the tiny random checkpoint (batches of one), on
    `pages` pages spread evenly over all rendered pages, after one warm-up call."""
    from vlbeam.pipeline.prompts import DEFAULT_OCR_PROMPT_ID, builtin_prompt
    from vlbeam.schemas.config import ModelConfig
    from vlbeam.schemas.elements import VLRequest
    from vlbeam.transforms.backends.qwen_transformers import generate_batch, load_qwen

    cfg = ModelConfig(model="tiny-random", device="cpu", max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    loaded = load_qwen(cfg)
    load_s = time.perf_counter() - t0
    prompt = builtin_prompt(DEFAULT_OCR_PROMPT_ID).text
    step = max(1, len(records) // max(1, pages))
    sample = records[::step][:pages]
    generate_batch(loaded, [VLRequest(images=(sample[0]["image"],), prompt=prompt)], cfg)
    per_page = []
    for r in sample:
        t = time.perf_counter()
        generate_batch(loaded, [VLRequest(images=(r["image"],), prompt=prompt)], cfg)
        per_page.append({"file": r["file"], "page": r["page"], "s": time.perf_counter() - t})
    seconds = [p["s"] for p in per_page]
    return {
        "model": "tiny-random",
        "device": "cpu",
        "max_new_tokens": max_new_tokens,
        "load_s": load_s,
        "pages": per_page,
        "mean_s_per_page": statistics.mean(seconds),
        "median_s_per_page": statistics.median(seconds),
    }


def print_table(by_file: dict[str, dict], total: dict) -> None:
    cols = ("pages", "blank", "layer ok")
    head = f"{'file':40s} " + " ".join(f"{c:>8s}" for c in cols)
    head += " " + " ".join(f"{p:>20s}" for p in POLICIES)
    print(head)
    print("-" * len(head))
    for name, s in [*by_file.items(), ("TOTAL", total)]:
        if name == "TOTAL":
            print("-" * len(head))
        row = f"{name[:40]:40s} {s['pages']:8d} {s['blank']:8d} {s['text_layer_usable']:8d}"
        for p in POLICIES:
            cell = f"{s['model_calls'][p]} ({100 * s['share_to_model'][p]:.0f} %)"
            row += f" {cell:>20s}"
        print(row)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="corpus folder (default $VLBEAM_CORPUS or ../shared)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--max-pages-per-file", type=int, help="first N pages of each PDF")
    parser.add_argument("--quick", action="store_true", help="20 pages per file, 3 model pages")
    parser.add_argument("--no-model", action="store_true", help="skip the tiny-model timing")
    parser.add_argument("--model-pages", type=int, default=8, help="pages timed with the model")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--end-to-end", nargs="+", metavar="FILE", help="vlbeam run ocr vs prefer on these PDFs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.max_pages_per_file = args.max_pages_per_file or 20
        args.model_pages = min(args.model_pages, 3)
    return args


def end_to_end(root: Path, files: list[str], max_new_tokens: int) -> dict:
    """`vlbeam run` with the tiny model, `ocr` vs `prefer`: wall time and calls avoided."""
    import re
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="vlbeam-policy-"))
    inputs = [f"--input={root / 'pdf' / 'good' / name}" for name in files]
    runs: dict[str, list[dict]] = {"ocr": [], "prefer": []}
    for round_ in range(2):
        order = ("ocr", "prefer") if round_ == 0 else ("prefer", "ocr")
        for policy in order:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "vlbeam.pipeline.cli", "run", *inputs,
                 f"--output={work / f'{policy}{round_}'}", "--model=tiny-random",
                 f"--text-layer-policy={policy}", f"--max-new-tokens={max_new_tokens}",
                 "--max-batch-size=8"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            wall = time.perf_counter() - started
            avoided = re.search(r"model calls avoided: (.*)", done.stdout)
            pages = re.search(r"pages:\s+(\d+) OCR'd", done.stdout)
            runs[policy].append({
                "wall_s": round(wall, 2),
                "pages": int(pages.group(1)) if pages else None,
                "avoided": avoided.group(1) if avoided else "",
            })  # fmt: skip
            print(f"  {policy:7s} round {round_}: {wall:6.1f} s, avoided: "
                  f"{runs[policy][-1]['avoided'] or '-'}", flush=True)  # fmt: skip
    best = {p: min(r["wall_s"] for r in rs) for p, rs in runs.items()}
    print(f"  prefer / ocr wall time (best of 2 each): {best['prefer'] / best['ocr']:.2f}")
    return {"files": files, "runs": runs, "best_wall_s": best,
            "prefer_over_ocr": round(best["prefer"] / best["ocr"], 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.end_to_end:
        print("end to end, vlbeam run --model tiny-random, ocr vs prefer:")
        result = end_to_end(corpus_root(args.corpus), args.end_to_end, args.max_new_tokens)
        out = args.out.with_name(args.out.stem + "_end_to_end.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
        return
    root = corpus_root(args.corpus)
    started = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}")
    cfg = RenderConfig()
    records: list[dict] = []
    for pdf in sorted((root / "pdf" / "good").glob("*.pdf")):
        records += check_pages(pdf, cfg, args.max_pages_per_file)
    by_file = {
        name: summarize([r for r in records if r["file"] == name])
        for name in dict.fromkeys(r["file"] for r in records)
    }
    total = summarize(records)
    print()
    print_table(by_file, total)

    refused = collections.Counter(r["rules"]["prefer"] for r in records)
    print("\nprefer, per page: " + ", ".join(f"{k} {v}" for k, v in refused.most_common()))
    blank_pages = [f"{r['file']} p{r['page']}" for r in records if r["blank"]]
    print(f"blank pages ({len(blank_pages)}): {', '.join(blank_pages) or '-'}")

    steps = ("render", "image_coverage", "measure_blank", "text_layer_usable")
    cost = {
        s: {
            "mean_ms": 1000 * statistics.mean(r["seconds"][s] for r in records),
            "p95_ms": 1000
            * sorted(r["seconds"][s] for r in records)[int(0.95 * (len(records) - 1))],
        }
        for s in steps
    }
    # What the checks cost as a stage would run them: `is_blank` looks at pixels only when the
    # page has no text layer (the table above measured every page, for its statistics);
    # coverage and the text-layer test only matter to `prefer`.
    blank_check_s = sum(
        r["seconds"]["measure_blank"] for r in records if r["text_layer_chars"] == 0
    )
    layer_check_s = sum(
        r["seconds"]["image_coverage"] + r["seconds"]["text_layer_usable"] for r in records
    )
    checks_s = {
        "ocr, no blank skip": 0.0,
        "ocr": blank_check_s,
        "prefer": blank_check_s + layer_check_s,
        "compare": blank_check_s,
    }
    print(
        "\ncost per page (mean / p95 ms): "
        + ", ".join(f"{s} {c['mean_ms']:.1f} / {c['p95_ms']:.1f}" for s, c in cost.items())
    )

    model = None
    saved = None
    if not args.no_model:
        try:
            model = time_model(records, args.model_pages, args.max_new_tokens)
        except Exception as exc:  # the rest of the results still count
            model = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"\nmodel timing failed: {model['error']}")
        if "mean_s_per_page" in model:
            per = model["mean_s_per_page"]
            base = total["model_calls"]["ocr, no blank skip"]
            saved = {
                p: {
                    "calls_avoided": base - total["model_calls"][p],
                    "model_s_saved": (base - total["model_calls"][p]) * per,
                    "checks_s": checks_s[p],
                    "model_s": total["model_calls"][p] * per,
                }
                for p in POLICIES
            }
            for v in saved.values():
                v["net_s_saved"] = v["model_s_saved"] - v["checks_s"]
            print(
                f"\ntiny model (cpu, max_new_tokens={model['max_new_tokens']}): "
                f"{per:.2f} s/page mean over {len(model['pages'])} pages "
                f"(median {model['median_s_per_page']:.2f} s; load {model['load_s']:.1f} s)"
            )
            print(
                f"{'policy':22s} {'calls':>7s} {'model s':>9s} {'saved s':>9s} "
                f"{'checks s':>9s} {'net s':>9s}"
            )
            for p, v in saved.items():
                print(
                    f"{p:22s} {total['model_calls'][p]:7d} {v['model_s']:9.1f} "
                    f"{v['model_s_saved']:9.1f} {v['checks_s']:9.2f} {v['net_s_saved']:9.1f}"
                )

    for r in records:
        r.pop("image")
    results = {
        "corpus": str(root),
        "render_config": repr(cfg),
        "thresholds": {
            k: getattr(module, k)
            for module in (blank_pages, text_layer)
            for k in dir(module)
            if k.isupper() and isinstance(getattr(module, k), int | float | tuple)
        },
        "by_file": by_file,
        "total": total,
        "prefer_rules": dict(refused),
        "blank_pages": blank_pages,
        "cost_per_page": cost,
        "checks_s": checks_s,
        "model": model,
        "estimated_saving": saved,
        "pages": records,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_end": os.getloadavg(),
        "total_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nload average at end: {os.getloadavg()}")
    print(f"wrote {args.out} ({results['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
