"""Does the model ever wait? End to end through `vlbeam run`, ratios measured in one run.

1. API flow: `vlbeam run --backend openai` (a subprocess, exactly as a user runs it) against a
   local OpenAI-compatible server on 127.0.0.1 that answers each page after a delay drawn from
   a latency distribution (fixed, lognormal sigma 0.5 / 1.0), the same delay for the same page in
   every run (seeded by the image's hash). Inputs are real rendered pages (corpus PDFs rendered
   at 1288 px, one PNG per page, each made unique). The server records when each request
   arrived and finished. Printed per setting:
   - mean requests in flight (sum of request durations / inference makespan) and the maximum;
   - efficiency = a lower bound on the makespan of an ideal scheduler with --max-concurrency
     slots, max(sum(latencies) / C, max(latency)), divided by the observed inference makespan
     (first arrival to last answer). A lower bound, so the efficiency is never flattered;
   - efficiency vs FIFO = the makespan of the same requests, in the order they arrived,
     dispatched to C slots that never idle, over the observed one: what is lost to the pipeline
     itself, apart from the order pages come in (which no scheduler that doesn't know the
     latencies in advance can choose);
   - pages/s over the inference makespan.
2. Local backend: the tiny random Qwen3-VL on CPU, `vlbeam run` (in this process, through the
   CLI's own `main`) on a PDF of N pages at --max-batch-size B, against a bare loop over the
   same pages (render → processor → generate, batches of B, model already loaded). Printed:
   pipeline pages/s ÷ bare loop pages/s (both from the first render to the last answer, model
   load and Beam start-up excluded), mean batch size ÷ B, and whether the first batch started
   before the last page was rendered.
3. Peak memory (largest process, RSS, sampled every 0.2 s) of an API OCR job (instant server)
   over a PDF of N1 vs N2 pages, on the in-process runner.
4. The same for grounding a 1080p video of M1 vs M2 minutes (needs the ffmpeg CLI).

    .venv/bin/python bench/bench_inference_flow.py                 # everything (~15 min)
    .venv/bin/python bench/bench_inference_flow.py --only api --pages 192
    .venv/bin/python bench/bench_inference_flow.py --only memory --memory-pages 500 5000

Writes bench/results/inference_flow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("VLBEAM_CORPUS") or REPO.parent / "shared" / "corpus")
RESULTS = REPO / "bench" / "results"
VLBEAM = [sys.executable, "-m", "vlbeam.pipeline.cli"]
SOURCE_PDFS = ["pdf/good/pdfjs_tracemonkey.pdf", "pdf/good/samplefiles_multicolumn.pdf"]


# -- latency distributions ----------------------------------------------------------------------


def inverse_normal(p: float) -> float:
    return statistics.NormalDist().inv_cdf(min(max(p, 1e-9), 1 - 1e-9))


def latency_for(key: bytes, dist: str, median_s: float) -> float:
    """A deterministic latency for one page: the same page gets the same delay every run."""
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    if dist == "fixed":
        return median_s
    sigma = float(dist.removeprefix("lognormal"))
    return median_s * math.exp(sigma * inverse_normal(u))


# -- the latency server ---------------------------------------------------------------------------


class LatencyServer:
    """An OpenAI-compatible chat endpoint that sleeps a per-page latency and records timings."""

    def __init__(self, dist: str = "fixed", median_s: float = 0.0) -> None:
        self.dist, self.median_s = dist, median_s
        self.records: list[tuple[float, float, float]] = []  # (arrived, finished, latency)
        self._in_flight = 0
        self.max_in_flight = 0
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, dist: str, median_s: float) -> None:
        self.dist, self.median_s = dist, median_s
        self.records, self.max_in_flight = [], 0

    async def _chat(self, request):
        from aiohttp import web

        arrived = time.monotonic()
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        body = await request.json()
        parts = body["messages"][-1]["content"]
        image = next((p["image_url"]["url"] for p in parts if p.get("type") == "image_url"), "")
        latency = latency_for(image[-4096:].encode(), self.dist, self.median_s)
        await asyncio.sleep(latency)
        self._in_flight -= 1
        self.records.append((arrived, time.monotonic(), latency))
        return web.json_response(
            {
                "id": f"r{len(self.records)}",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "text"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 1, "total_tokens": 1001},
            }
        )

    def start(self) -> LatencyServer:
        from aiohttp import web

        async def setup():
            app = web.Application(client_max_size=64 << 20)
            app.router.add_post("/v1/chat/completions", self._chat)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        return self

    def stats(self, concurrency: int) -> dict:
        arrived = [a for a, _, _ in self.records]
        finished = [f for _, f, _ in self.records]
        latencies = [lat for _, _, lat in self.records]
        span = max(finished) - min(arrived)
        busy = sum(f - a for a, f, _ in self.records)
        ideal = max(sum(latencies) / concurrency, max(latencies))
        # the same requests, in the order they arrived, dispatched to C slots with no wait:
        # what a pipeline that never lets a slot idle would take, without knowing latencies
        slots = [0.0] * concurrency
        for _, _, latency in sorted(self.records):
            earliest = heapq.heappop(slots)
            heapq.heappush(slots, earliest + latency)
        fifo = max(slots)
        return {
            "requests": len(self.records),
            "makespan_s": round(span, 3),
            "ideal_lower_bound_s": round(ideal, 3),
            "efficiency": round(ideal / span, 3),
            "fifo_makespan_s": round(fifo, 3),
            "efficiency_vs_fifo": round(fifo / span, 3),
            "mean_in_flight": round(busy / span, 2),
            "max_in_flight": self.max_in_flight,
            "pages_per_s": round(len(self.records) / span, 2),
        }


# -- inputs ---------------------------------------------------------------------------------------


def rendered_pages(folder: Path, count: int) -> list[Path]:
    """`count` distinct single-page PNGs from real corpus pages rendered at 1288 px."""
    import pypdfium2 as pdfium
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base: list[Image.Image] = []
    for rel in SOURCE_PDFS:
        pdf = pdfium.PdfDocument(str(CORPUS / rel))
        for page in pdf:
            w, h = page.get_size()
            scale = 1288 / max(w, h)
            base.append(page.render(scale=scale).to_pil().convert("RGB"))
        pdf.close()
    paths = []
    for i in range(count):
        image = base[i % len(base)].copy()
        image.putpixel((i % image.width, (i // image.width) % image.height), (i % 251, 7, 9))
        path = folder / f"page{i:05d}.png"
        image.save(path, format="PNG", compress_level=1)
        paths.append(path)
    return paths


def long_pdf(path: Path, pages: int) -> Path:
    """A PDF of `pages` pages made of real corpus pages, imported over and over."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(CORPUS / SOURCE_PDFS[0]))
    out = pdfium.PdfDocument.new()
    n = len(source)
    while len(out) < pages:
        take = min(n, pages - len(out))
        out.import_pages(source, list(range(take)))
    out.save(str(path))
    out.close()
    source.close()
    return path


# -- 1. API flow ----------------------------------------------------------------------------------


def api_flow(pages: int, settings: list[tuple[int, str, float]]) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="vlbeam-flow-"))
    rendered_pages(work / "in", pages)
    server = LatencyServer().start()
    rows = []
    for concurrency, dist, median in settings:
        server.reset(dist, median)
        out = work / f"out-{concurrency}-{dist}-{median}"
        started = time.monotonic()
        proc = subprocess.run(
            [*VLBEAM, "run", f"--input={work / 'in'}/*.png", f"--output={out}", "--tasks=ocr",
             "--backend=openai", "--provider=openai", f"--base-url={server.base_url}",
             "--api-model=bench", "--api-key-env=", "--no-preflight",
             f"--max-concurrency={concurrency}", "--max-new-tokens=16"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        row = {"concurrency": concurrency, "latency": f"{dist} median {median}s",
               "pages": pages, "wall_s": round(wall, 2), **server.stats(concurrency)}  # fmt: skip
        rows.append(row)
        print_row(row)
    return rows


def print_row(row: dict) -> None:
    print(
        f"  C={row['concurrency']:<4} {row['latency']:<26} in flight {row['mean_in_flight']:>6} "
        f"(max {row['max_in_flight']:>3})  efficiency {row['efficiency']:.2f}  "
        f"(vs FIFO {row['efficiency_vs_fifo']:.2f})  {row['pages_per_s']:>7} pages/s  makespan "
        f"{row['makespan_s']} s (ideal >= {row['ideal_lower_bound_s']} s, "
        f"FIFO {row['fifo_makespan_s']} s)",
        flush=True,
    )


# -- 2. local backend -----------------------------------------------------------------------------


class _BatchLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.starts: list[tuple[float, int]] = []
        self.ends: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"batch (start|end) ([\d.]+) size (\d+)", record.getMessage())
        if match:
            if match.group(1) == "start":
                self.starts.append((float(match.group(2)), int(match.group(3))))
            else:
                self.ends.append(float(match.group(2)))


def local_backend(pages: int, batch: int) -> dict:
    from vlbeam.pipeline.cli import main
    from vlbeam.pipeline.prompts import builtin_prompt
    from vlbeam.schemas.config import ModelConfig, RenderConfig
    from vlbeam.schemas.elements import PageRange, SourceFile, VLRequest
    from vlbeam.transforms.backends.qwen_transformers import generate_batch, load_qwen
    from vlbeam.transforms.document_pages import PageRenderer
    from vlbeam.transforms.media.helper_process import HelperProcess

    work = Path(tempfile.mkdtemp(prefix="vlbeam-local-"))
    pdf = long_pdf(work / "doc.pdf", pages)
    max_new = 16
    # bare loop: same renderer, same pages, same processor + generate, batches of `batch`
    cfg = ModelConfig(model="tiny-random", max_new_tokens=max_new, max_batch_size=batch)
    loaded = load_qwen(cfg)
    prompt = builtin_prompt("ocr_markdown_v1").text
    helper = HelperProcess()
    source = SourceFile(str(pdf), hashlib.sha256(pdf.read_bytes()).hexdigest(), "pdf", None)
    renderer = PageRenderer(RenderConfig())
    started = time.monotonic()
    queue: list[VLRequest] = []
    for page in renderer.pages(helper, PageRange(source, 1, pages, pages)):
        queue.append(VLRequest(images=(page.image,), prompt=prompt))
        if len(queue) == batch:
            generate_batch(loaded, queue, cfg)
            queue = []
    if queue:
        generate_batch(loaded, queue, cfg)
    bare_s = time.monotonic() - started
    helper.close()

    # the pipeline: `vlbeam run` through the CLI's own main, in this process
    log = _BatchLog()
    engine_logger = logging.getLogger("vlbeam.transforms.backends.engine")
    engine_logger.addHandler(log)
    engine_logger.setLevel(logging.DEBUG)
    rendered: list[float] = []
    real_pages = PageRenderer.pages

    first_render: list[float] = []

    def timed_pages(self, helper, task):
        first_render.append(time.monotonic())
        for page in real_pages(self, helper, task):
            rendered.append(time.monotonic())
            yield page

    PageRenderer.pages = timed_pages  # in-process runner: the class is shared
    try:
        code = main(["run", f"--input={pdf}", f"--output={work / 'out'}", "--model=tiny-random",
                     f"--max-new-tokens={max_new}", f"--max-batch-size={batch}",
                     f"--pages-per-task={pages}"])  # fmt: skip
    finally:
        PageRenderer.pages = real_pages
        engine_logger.removeHandler(log)
    if code:
        raise RuntimeError(f"vlbeam run exited {code}")
    pipeline_s = max(log.ends) - min(first_render)
    sizes = [n for _, n in log.starts]
    return {
        "pages": pages,
        "max_batch_size": batch,
        "bare_loop_s": round(bare_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_over_bare": round(bare_s / pipeline_s, 3),
        "mean_batch": round(sum(sizes) / len(sizes), 2),
        "mean_batch_over_max": round(sum(sizes) / len(sizes) / batch, 3),
        "batches": sizes,
        "first_batch_before_last_render": min(t for t, _ in log.starts) < max(rendered),
    }


# -- 3. memory ------------------------------------------------------------------------------------


PEAKS_BY_ROLE: dict[str, int] = {}


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(largest single-process peak RSS in MiB over the process tree, wall seconds); the peak
    of each kind of process (the job, its helper) goes in PEAKS_BY_ROLE."""
    import psutil

    started = time.monotonic()
    peak = 0
    PEAKS_BY_ROLE.clear()
    with tempfile.TemporaryFile() as log:  # not a pipe: a chatty run would block on a full one
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss = p.memory_info().rss
                        peak = max(peak, rss)
                        role = "helper" if "helper_process" in " ".join(p.cmdline()) else "job"
                        PEAKS_BY_ROLE[role] = max(PEAKS_BY_ROLE.get(role, 0), rss >> 20)
            time.sleep(0.2)
        if proc.returncode:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace")[-3000:])
    return peak / 2**20, time.monotonic() - started


def memory(page_counts: list[int]) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="vlbeam-mem-"))
    server = LatencyServer("fixed", 0.0).start()
    rows = []
    for n in page_counts:
        pdf = long_pdf(work / f"doc{n}.pdf", n)
        mb, wall = peak_rss_mb(
            [*VLBEAM, "run", f"--input={pdf}", f"--output={work / f'out{n}'}", "--tasks=ocr",
             "--backend=openai", "--provider=openai", f"--base-url={server.base_url}",
             "--api-model=bench", "--api-key-env=", "--no-preflight", "--max-concurrency=16"]
        )  # fmt: skip
        row = {"pages": n, "peak_rss_mib": round(mb, 1), "wall_s": round(wall, 1),
               "peak_mib_by_process": dict(PEAKS_BY_ROLE)}  # fmt: skip
        rows.append(row)
        print(f"  {n:>6} pages: largest process peaked at {mb:,.0f} MiB ({wall:.0f} s; "
              f"by process: {PEAKS_BY_ROLE})", flush=True)  # fmt: skip
    return rows


def long_video(path: Path, minutes: float) -> Path:
    """A 1080p H.264 video of `minutes` (ffmpeg's test pattern at 5 fps, keyframe every 2 s)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1920x1080:rate=5:duration={minutes * 60}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def video_memory(minute_counts: list[float]) -> list[dict]:
    """Peak memory of grounding a long 1080p video (API backend, instant server)."""
    work = Path(tempfile.mkdtemp(prefix="vlbeam-vmem-"))
    server = LatencyServer("fixed", 0.0).start()
    rows = []
    for minutes in minute_counts:
        video = long_video(work / f"v{minutes:g}.mp4", minutes)
        mb, wall = peak_rss_mb(
            [*VLBEAM, "run", f"--input={video}", f"--output={work / f'out{minutes:g}'}",
             "--tasks=grounding", "--backend=openai", "--provider=openai",
             f"--base-url={server.base_url}", "--api-model=bench", "--api-key-env=",
             "--no-preflight", "--max-concurrency=16"]
        )  # fmt: skip
        row = {"minutes": minutes, "peak_rss_mib": round(mb, 1), "wall_s": round(wall, 1),
               "windows": len(server.records)}  # fmt: skip
        server.records = []
        rows.append(row)
        print(f"  {minutes:>4g} min 1080p: largest process peaked at {mb:,.0f} MiB "
              f"({row['windows']} windows, {wall:.0f} s)", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["api", "local", "memory", "video"], action="append")
    parser.add_argument("--pages", type=int, default=192, help="API flow: pages per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--local-pages", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory-pages", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--video-minutes", type=float, nargs="+", default=[5, 60])
    args = parser.parse_args()
    only = set(args.only or ["api", "local", "memory", "video"])
    results: dict = {}
    if "api" in only:
        print("1. API flow: vlbeam run --backend openai against a latency server")
        settings = [(c, d, 0.4) for c in args.concurrency
                    for d in ("fixed", "lognormal0.5", "lognormal1.0")]  # fmt: skip
        settings.append((64, "lognormal1.0", 2.0))
        results["api_flow"] = api_flow(args.pages, settings)
    if "local" in only:
        print("2. Local backend (tiny model, CPU): pipeline vs bare loop")
        row = local_backend(args.local_pages, args.batch)
        results["local_backend"] = row
        print(
            f"  {row['pages']} pages, --max-batch-size {row['max_batch_size']}: pipeline "
            f"{row['pipeline_s']} s vs bare loop {row['bare_loop_s']} s -> "
            f"{row['pipeline_over_bare']:.2f}x the bare loop's pages/s; mean batch "
            f"{row['mean_batch']} ({row['mean_batch_over_max']:.2f} of max); first batch before "
            f"last render: {row['first_batch_before_last_render']}"
        )
    if "memory" in only:
        print("3. Peak memory of an API OCR job (instant server), in-process runner")
        rows = memory(args.memory_pages)
        results["memory"] = rows
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
            print(f"  ratio {rows[-1]['pages']} / {rows[0]['pages']} pages: {ratio:.2f}x")
    if "video" in only:
        print("4. Peak memory of grounding a long 1080p video (instant server), in-process runner")
        rows = video_memory(args.video_minutes)
        results["video_memory"] = rows
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
            print(f"  ratio {rows[-1]['minutes']:g} / {rows[0]['minutes']:g} min: {ratio:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "inference_flow.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
