"""Does vlbeam feed the accelerator? CPU per page (frame) end to end vs the bare floor, and the
speed-up from one core to all of them (issue #27).

Every row is a real `vlbeam run --tasks ocr|grounding --backend openai` (a subprocess, as a
user runs it) against an OpenAI-compatible server on 127.0.0.1 that answers every request at
once (it reads the body and returns a constant answer, in this bench's process, so its CPU is
not counted and nothing but vlbeam's own work sets the pace). Inputs, generated once into
`bench/results/feed-cache/`:

- `scanned`: a PDF of N pages that are images (900 x 1200 JPEG scans at 100 dpi, 8 distinct
  noisy "scans" of text lines, each repeat with its own copy of the image);
- `born-digital`: a PDF of N pages cycling through pdf.js's tracemonkey paper (14 pages of
  text, figures and fonts), each repeat with its own objects;
- `png`: the scanned pages rendered once at 1288 px as N separate PNG files (each unique);
- `video`: a 1080p H.264 video (30 fps, a keyframe every 2 s, panning texture), grounded at
  2 fps (the default).

For each input: a run with `taskset` on one core and `--render-workers 1` (`1 core`), and the
default run (every core, `--render-workers 0`). CPU is user+sys of the whole process tree
(`os.wait4` on the subprocess: the job, its render helpers, every descendant reaped), and is
also sampled with psutil for the peak RSS of the tree. The fixed cost of a run (interpreter,
Beam, imports, pipeline start-up) is measured with a one-page (one-second) input in the same
configuration, and reported both ways: `CPU/page` includes it, `net CPU/page` is
(CPU - fixed) / pages.

Floors, measured in this bench's process on one core in the same run (CPU time):
- pages: pypdfium2 render at 1288 px long side to RGB, PNG level 1, base64 (the work that must
  be done for each page to reach an HTTP API), over an evenly strided sample of pages;
- PNG files: read the file, base64;
- video: decode every frame of the video with PyAV, one thread (what ffmpeg -threads 1 does).

Printed: pages (frames) per second, CPU per page (frame) and its ratio to the floor, peak RSS,
and the speed-up of the default run over the one-core run. Targets (issue #27): CPU/page <= 1.3x
the floor (scanned, born-digital), default pages/s >= 1.7x the one-core run on 2 cores, video
CPU/frame <= 1.2x the decode floor.

    ./py bench/bench_feed.py                       # 1,024 pages, 240 s of video (~10 min)
    ./py bench/bench_feed.py --pages 128 --video-seconds 60      # quick
    ./py bench/bench_feed.py --only scanned,born-digital --modes default

Writes bench/results/bench_feed.json. The machine may be shared: read ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("VLBEAM_CORPUS") or REPO.parent / "shared" / "corpus")
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "feed-cache"
VLBEAM = [sys.executable, "-m", "vlbeam.pipeline.cli"]
BORN_DIGITAL_SOURCE = CORPUS / "pdf/good/pdfjs_tracemonkey.pdf"
LONG_SIDE = 1288
SCAN_SIZE = (900, 1200)  # px at 100 dpi: 9 x 12 in
NOISE_SIGMA = 0.5  # grey levels of sensor noise on the paper (before JPEG)
VIDEO_SIZE = (1920, 1080)
VIDEO_RATE = 30
VIDEO_GOP = 60
FPS = 2.0
INPUTS = ("scanned", "born-digital", "png", "video")


# -- the instant server ----------------------------------------------------------------------


ANSWER = json.dumps(
    {
        "id": "r",
        "model": "bench",
        "choices": [
            # "[]": no event for grounding (a valid answer, so runs exit 0), text for OCR
            {"index": 0, "message": {"role": "assistant", "content": "[]"},
             "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 1, "total_tokens": 1001},
    }
).encode()  # fmt: skip


class InstantServer:
    """POST /v1/chat/completions: read the body, answer a constant at once; counts requests."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request):
        from aiohttp import web

        await request.read()
        self.requests += 1
        return web.Response(body=ANSWER, content_type="application/json")

    def start(self) -> InstantServer:
        from aiohttp import web

        async def setup():
            app = web.Application(client_max_size=256 << 20)
            app.router.add_post("/v1/chat/completions", self._chat)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        return self


# -- inputs ------------------------------------------------------------------------------------


def _scan_page(seed: int):
    """A 900 x 1200 greyscale 'scan': lines of dark word-like blocks on off-white paper with
    uneven lighting and a little noise (stored as JPEG quality 85 in the PDF)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = SCAN_SIZE
    page = np.full((h, w), 236, dtype=np.float32)
    page += np.linspace(0, 10, w)[None, :]  # uneven lighting
    for top in range(90, h - 90, 28):
        x = 80
        while x < w - 120:
            word = int(rng.integers(20, 90))
            page[top : top + 12, x : x + word] -= rng.uniform(120, 180)
            page[top + 12 : top + 14, x : x + word : 3] -= 60
            x += word + int(rng.integers(8, 16))
    page += rng.normal(0, NOISE_SIGMA, page.shape)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))  # a greyscale scan


def _repeat_pdf(src: Path, pages: int, dest: Path) -> None:
    """`pages` pages cycling through `src`'s, each repeat with its own objects."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(src))
    out = pdfium.PdfDocument.new()
    try:
        while len(out) < pages:
            out.import_pages(source, list(range(min(len(source), pages - len(out)))))
        out.save(str(dest))
    finally:
        out.close()
        source.close()


def scanned_pdf(pages: int) -> Path:
    dest = CACHE / f"scanned_{pages}.pdf"
    if not dest.exists():
        base = CACHE / "scanned_base.pdf"
        if not base.exists():
            scans = [_scan_page(i) for i in range(8)]
            scans[0].save(base, format="PDF", resolution=100, save_all=True,
                          append_images=scans[1:], quality=85)  # fmt: skip
        _repeat_pdf(base, pages, dest.with_suffix(".part"))
        dest.with_suffix(".part").rename(dest)
    return dest


def born_digital_pdf(pages: int) -> Path:
    dest = CACHE / f"born_digital_{pages}.pdf"
    if not dest.exists():
        _repeat_pdf(BORN_DIGITAL_SOURCE, pages, dest.with_suffix(".part"))
        dest.with_suffix(".part").rename(dest)
    return dest


def png_folder(pages: int) -> Path:
    """`pages` unique PNG files: the scanned pages rendered at 1288 px, one pixel changed."""
    import pypdfium2 as pdfium

    folder = CACHE / f"png_{pages}"
    if not folder.exists():
        part = folder.with_suffix(".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        doc = pdfium.PdfDocument(str(scanned_pdf(8)))
        base = [_render(doc, i) for i in range(len(doc))]
        doc.close()
        for i in range(pages):
            image = base[i % len(base)].copy()
            image.putpixel((i % image.width, (i // image.width) % image.height), (i % 251, 7, 9))
            image.save(part / f"page{i:05d}.png", format="PNG", compress_level=1)
        part.rename(folder)
    return folder


def video_file(seconds: int) -> Path:
    """1080p H.264, 30 fps, keyframe every 2 s: a panning noise texture with a moving box."""
    import av
    import numpy as np

    dest = CACHE / f"video_{seconds}s.mp4"
    if dest.exists():
        return dest
    w, h = VIDEO_SIZE
    rng = np.random.default_rng(0)
    texture = (rng.random((h // 8 + 1, (w + 4 * VIDEO_RATE * seconds) // 8 + 2)) * 255).astype(
        np.uint8
    )
    texture = np.kron(texture, np.ones((8, 8), dtype=np.uint8))  # 8 px blocks: codable detail
    part = dest.with_suffix(".part.mp4")
    with av.open(str(part), "w") as out:
        stream = out.add_stream("libx264", rate=VIDEO_RATE)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(VIDEO_GOP), "keyint_min": str(VIDEO_GOP),
                          "sc_threshold": "0", "crf": "23"}  # fmt: skip
        chroma = np.full((h // 2, w), 128, dtype=np.uint8)
        for i in range(VIDEO_RATE * seconds):
            luma = texture[:h, 4 * i : 4 * i + w].copy()
            x = (i * 7) % (w - 200)
            luma[400:600, x : x + 200] = 255 - (i % 200)
            frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    part.rename(dest)
    return dest


# -- floors (this process, one core, CPU time) -------------------------------------------------


def _render(doc, index: int):
    page = doc[index]
    try:
        width, height = page.get_size()
        return page.render(scale=LONG_SIDE / max(width, height)).to_pil().convert("RGB")
    finally:
        page.close()


def page_floor_ms(pdf: Path, sample: int = 64) -> float:
    """CPU ms per page: render at 1288 px to RGB, PNG level 1, base64 (strided sample)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    indices = list(range(0, len(doc), max(1, len(doc) // sample)))
    _render(doc, indices[0])  # warm up
    started = time.process_time()
    for index in indices:
        buf = io.BytesIO()
        _render(doc, index).save(buf, format="PNG", compress_level=1)
        base64.b64encode(buf.getvalue())
    spent = time.process_time() - started
    doc.close()
    return 1000 * spent / len(indices)


def png_floor_ms(folder: Path) -> float:
    """CPU ms per file: read it, base64."""
    files = sorted(folder.iterdir())
    started = time.process_time()
    for path in files:
        base64.b64encode(path.read_bytes())
    return 1000 * (time.process_time() - started) / len(files)


def video_floor(path: Path) -> tuple[float, int, float]:
    """(CPU ms per decoded frame, frames, seconds of video): every frame, one thread."""
    import av

    started = time.process_time()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        frames = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base)
    return 1000 * (time.process_time() - started), frames, duration


# -- end-to-end runs ---------------------------------------------------------------------------


def run_vlbeam(argv: list[str], cores: str | None) -> dict:
    """Run `vlbeam run ARGV` (pinned to `cores` with taskset when given): wall, CPU of the
    whole reaped tree, peak RSS of the tree (psutil samples)."""
    import psutil

    cmd = [*VLBEAM, "run", *argv]
    if cores is not None:
        cmd = ["taskset", "-c", cores, *cmd]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read after the run, closed with it
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    peak, helpers = 0, set()
    root = psutil.Process(proc.pid)
    while True:
        try:
            done = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            done = True
        if done:
            break
        try:
            tree = [root, *root.children(recursive=True)]
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                    if "helper_process" in " ".join(p.cmdline()):
                        helpers.add(p.pid)
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        log.seek(0)
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read().decode()[-4000:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_tree_rss_mb": round(peak / 2**20, 1),
        "helper_pids": len(helpers),
    }


NO_WORKERS_FLAG = False  # --baseline: a vlbeam without --render-workers


def job_argv(server: InstantServer, inp: str, out: Path, workers: int, extra=()) -> list[str]:
    extra = [*extra] if NO_WORKERS_FLAG else [f"--render-workers={workers}", *extra]
    tasks = "grounding" if inp.endswith(".mp4") else "ocr"
    return [
        f"--input={inp}", f"--output={out}", f"--tasks={tasks}", "--backend=openai",
        "--provider=openai", f"--base-url={server.base_url}", "--api-model=bench",
        "--api-key-env=", "--no-preflight", "--max-concurrency=16", "--max-new-tokens=16",
        *extra,
    ]  # fmt: skip


MODES = {"1 core": ("0", 1), "default": (None, 0)}  # taskset cores, --render-workers


def bench_input(server, name: str, inp: str, small: str, units: int, floor_ms: float,
                modes: list[str], work: Path) -> list[dict]:  # fmt: skip
    rows = []
    for mode in modes:
        cores, workers = MODES[mode]
        fixed = run_vlbeam(job_argv(server, small, work / f"{name}-{mode}-fixed", workers), cores)
        before = server.requests
        got = run_vlbeam(job_argv(server, inp, work / f"{name}-{mode}", workers), cores)
        requests = server.requests - before
        per_unit = 1000 * got["cpu_s"] / units
        net = 1000 * max(0.0, got["cpu_s"] - fixed["cpu_s"]) / units
        row = {
            "input": name, "mode": mode, "units": units, "requests": requests, **got,
            "fixed_cpu_s": fixed["cpu_s"], "fixed_wall_s": fixed["wall_s"],
            "units_per_s": round(units / got["wall_s"], 2),
            "cpu_ms_per_unit": round(per_unit, 2), "net_cpu_ms_per_unit": round(net, 2),
            "floor_ms": round(floor_ms, 2), "x_floor": round(per_unit / floor_ms, 2),
            "net_x_floor": round(net / floor_ms, 2),
        }  # fmt: skip
        rows.append(row)
        print_row(row)
    return rows


HEADER = (
    f"{'input':<13} {'mode':<8} {'units':>6} {'wall s':>7} {'units/s':>8} {'CPU s':>7} "
    f"{'ms/unit':>8} {'net ms':>7} {'floor':>6} {'x floor':>8} {'net x':>6} {'peak MB':>8} "
    f"{'helpers':>7}"
)


def print_row(row: dict) -> None:
    print(
        f"{row['input']:<13} {row['mode']:<8} {row['units']:>6} {row['wall_s']:>7} "
        f"{row['units_per_s']:>8} {row['cpu_s']:>7} {row['cpu_ms_per_unit']:>8} "
        f"{row['net_cpu_ms_per_unit']:>7} {row['floor_ms']:>6} {row['x_floor']:>8} "
        f"{row['net_x_floor']:>6} {row['peak_tree_rss_mb']:>8} {row['helper_pids']:>7}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=1024, help="pages per PDF / PNG files")
    ap.add_argument("--video-seconds", type=int, default=240)
    ap.add_argument("--only", default=",".join(INPUTS), help="comma list of " + ",".join(INPUTS))
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + ",".join(MODES))
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_feed.json")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="for a vlbeam without --render-workers (before issue #27)",
    )
    args = ap.parse_args(argv)
    global NO_WORKERS_FLAG
    NO_WORKERS_FLAG = args.baseline
    only, modes = args.only.split(","), args.modes.split(",")
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()} (the machine may be shared)")
    server = InstantServer().start()
    work = Path(tempfile.mkdtemp(prefix="vlbeam-feed-"))
    rows, floors = [], {}
    print(HEADER)
    try:
        for name in only:
            if name in ("scanned", "born-digital"):
                pdf = (scanned_pdf if name == "scanned" else born_digital_pdf)(args.pages)
                one = (scanned_pdf if name == "scanned" else born_digital_pdf)(1)
                floors[name] = page_floor_ms(pdf)
                rows += bench_input(server, name, str(pdf), str(one), args.pages,
                                    floors[name], modes, work)  # fmt: skip
            elif name == "png":
                folder = png_folder(args.pages)
                one = png_folder(1)
                floors[name] = png_floor_ms(folder)
                rows += bench_input(server, name, f"{folder}/*.png", f"{one}/*.png", args.pages,
                                    floors[name], modes, work)  # fmt: skip
            elif name == "video":
                video = video_file(args.video_seconds)
                one = video_file(1)
                decode_ms, frames, duration = video_floor(video)
                sampled = round(duration * FPS)  # frames sent, overlaps aside
                floors[name] = decode_ms / sampled  # decode floor per sampled frame
                rows += bench_input(server, name, str(video), str(one), sampled,
                                    floors[name], modes, work)  # fmt: skip
                rows[-1]["decoded_frames"] = frames
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speedups = {}
    for name in only:
        by_mode = {r["mode"]: r for r in rows if r["input"] == name}
        if "1 core" in by_mode and "default" in by_mode:
            speedups[name] = round(by_mode["default"]["units_per_s"]
                                   / by_mode["1 core"]["units_per_s"], 2)  # fmt: skip
    print("speed-up, default over one core:", speedups)
    print("floors ms/unit:", {k: round(v, 2) for k, v in floors.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "rows": rows, "speedups": speedups, "floors_ms": floors, "pages": args.pages,
        "video_seconds": args.video_seconds, "cpus": os.cpu_count(),
        "load_average_end": os.getloadavg(), "python": platform.python_version(),
    }, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
