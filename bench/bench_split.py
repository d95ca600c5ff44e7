"""Benchmark vlbeam's split-and-render stage (PDF pages to encoded page images).

What it measures, all within one run so that ratios are comparable on a noisy machine:

1. Throughput (pages/s) of vlbeam's real code path against a bare pypdfium2 loop over
   the same pages: `HelperProcess` (the helper subprocess) driven page by page like
   `PageRenderer` does, with `RenderConfig()` defaults (1288 px long side, PNG level 1,
   text layer on), once more with the text layer off, and the whole `PlanAndRender`
   transform in a `FnApiRunner` pipeline. The bare loop opens the PDF once and renders
   each page at the same scale to PIL RGB and encodes PNG level 1 (same work, no process
   boundary); a render-only loop (no encode) is given for context.
2. Renderer: pypdfium2 (default) against pdf2image/poppler, both through `HelperProcess`.
3. Page image transport format: size and encode/decode time of PNG level 1 (vlbeam's
   default), PNG level 6, lossless WebP (method 0) and JPEG q95 for a few pages.
4. Peak memory of a `PlanAndRender` pipeline (fresh subprocess, counting sink) over a small
   PDF and over 1,000-page PDFs built from it (repeats sharing their objects, and repeats
   with their own copies, as separately made pages have), to test that memory does not
   grow with the page count. The process tree (driver + render helpers) is sampled with
   psutil; peaks per process are VmHWM from /proc (getrusage's ru_maxrss is not used: a
   spawned process inherits its parent's peak through exec).

Run: `.venv/bin/python bench/bench_split.py [--quick] [--corpus DIR] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import apache_beam as beam
import numpy as np
import psutil
import pypdfium2 as pdfium
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from PIL import Image

from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.elements import PageImage, SourceFile
from vlbeam.transforms.ingest import identify_file
from vlbeam.transforms.media.files import read_uri
from vlbeam.transforms.media.helper_process import HelperProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "bench_split.json"
BENCH_NAMESPACE = "vlbeam_bench"

# Inputs, relative to <corpus>/pdf/good.
PAGE_SETS: dict[str, tuple[str, ...]] = {
    "born-digital": ("pdfjs_tracemonkey.pdf", "samplefiles_multicolumn.pdf"),
    "scanned": (
        "pypdf_Seige_of_Vicksburg_Sample_OCR.pdf",
        "ocrmypdf_linn.pdf",
        "ocrmypdf_c02-22.pdf",
    ),
}
FORMAT_PAGES: tuple[tuple[str, int, str], ...] = (
    ("pdfjs_tracemonkey.pdf", 1, "born-digital text"),
    ("samplefiles_GeoTopo-komprimiert.pdf", 95, "born-digital figure"),
    ("pypdf_Seige_of_Vicksburg_Sample_OCR.pdf", 1, "scanned"),
    ("ocrmypdf_linn.pdf", 1, "scanned"),
)
BIG_SOURCE = "pdfjs_tracemonkey.pdf"
SAMPLE_INTERVAL_S = 0.05
MIN_GROWTH_WINDOW_S = 5.0

T = TypeVar("T")


# ------------------------------------------------------------------ small utilities


def resolve_corpus(arg: str | None) -> Path:
    corpus = Path(arg or os.environ.get("VLBEAM_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
    if not (corpus / "pdf" / "good").is_dir():
        sys.exit(f"corpus not found: {corpus}/pdf/good (use --corpus or VLBEAM_CORPUS)")
    return corpus


def page_count(path: Path) -> int:
    doc = pdfium.PdfDocument(path)
    try:
        return len(doc)
    finally:
        doc.close()


def timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[float, T]:
    """(seconds, result) of `fn(*args, **kwargs)`."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n## {title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# ------------------------------------------------------------------ page renderers


def bare_render(
    path: Path, cfg: RenderConfig, encode: bool, stride: int = 1
) -> list[tuple[int, int]]:
    """pypdfium2 in-process: open once, render every `stride`-th page at vlbeam's scale
    (and encode PNG level 1 when `encode`)."""
    doc = pdfium.PdfDocument(path.read_bytes())
    sizes = []
    try:
        for index in range(0, len(doc), stride):
            image = _render_page_rgb(doc, index, cfg.target_long_side)
            if encode:
                image.save(io.BytesIO(), format="PNG", compress_level=1)
            sizes.append(image.size)
    finally:
        doc.close()
    return sizes


def _render_page_rgb(doc, index: int, long_side: int) -> Image.Image:
    page = doc[index]
    try:
        width, height = page.get_size()
        if page.get_rotation() in (90, 270):
            width, height = height, width
        return page.render(scale=long_side / max(width, height)).to_pil().convert("RGB")
    finally:
        page.close()


def worker_render(
    worker: HelperProcess, source: SourceFile, n_pages: int, cfg: RenderConfig
) -> list[tuple[int, int]]:
    """vlbeam's helper process, page by page, as `PageRenderer.pages` drives it."""
    data = read_uri(source.uri)
    sizes = []
    for page in range(1, n_pages + 1):
        rendered = worker.render(source.doc_id, data, source.kind, page, cfg)
        sizes.append((rendered.width_px, rendered.height_px))
    return sizes


def _count_pages(page: PageImage) -> int:
    del page  # drop the image bytes right away: the sink only counts
    return 1


def _record_count(n: int) -> None:
    Metrics.counter(BENCH_NAMESPACE, "pages").inc(n)


def _record_failures(n: int) -> None:
    Metrics.counter(BENCH_NAMESPACE, "failures").inc(n)


class PlanAndRender(beam.PTransform):
    """The job's planning (`PlanWork`: count pages, cut ranges, shuffle) and its page renderer
    (`PageRenderer`, as the inference stage drives it), without a model."""

    def __init__(self, cfg: RenderConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, sources):
        from vlbeam.transforms.media.work_units import VideoConfig
        from vlbeam.transforms.plan import PlanWork

        planned = sources | "Plan" >> PlanWork(self._cfg, VideoConfig())
        rendered = planned["units"] | "Render" >> beam.ParDo(_RenderOnly(self._cfg)).with_outputs(
            "failures", main="pages"
        )
        failures = (planned["failures"], rendered.failures) | "Failures" >> beam.Flatten()
        return {"pages": rendered.pages, "failures": failures}


class _RenderOnly(beam.DoFn):
    def __init__(self, cfg: RenderConfig) -> None:
        self._cfg = cfg

    def setup(self) -> None:
        from vlbeam.transforms.document_pages import PageRenderer
        from vlbeam.transforms.media.helper_process import HelperProcess

        self._helper = HelperProcess(self._cfg.max_memory_mb)
        self._renderer = PageRenderer(self._cfg)

    def teardown(self) -> None:
        self._helper.close()

    def process(self, task):
        for page in self._renderer.pages(self._helper, task):
            yield (
                page if isinstance(page, PageImage) else beam.pvalue.TaggedOutput("failures", page)
            )


def beam_split(sources: list[SourceFile], cfg: RenderConfig) -> tuple[int, int]:
    """The job's planning and page rendering on FnApiRunner with a counting sink.

    Returns (pages, failures)."""
    pipeline = beam.Pipeline(runner="FnApiRunner")
    split = pipeline | "Sources" >> beam.Create(sources) | "PlanAndRender" >> PlanAndRender(cfg)
    _ = (
        split["pages"]
        | "DropBytes" >> beam.Map(_count_pages)
        | "CountPages" >> beam.combiners.Count.Globally()
        | "RecordPages" >> beam.Map(_record_count)
    )
    _ = (
        split["failures"]
        | "CountFailures" >> beam.combiners.Count.Globally()
        | "RecordFailures" >> beam.Map(_record_failures)
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(BENCH_NAMESPACE))["counters"]
    values = {c.key.metric.name: c.committed for c in counters}
    return values.get("pages", 0), values.get("failures", 0)


# ------------------------------------------------------------------ 1 + 2: throughput


@dataclass(frozen=True)
class PageSet:
    name: str
    paths: list[Path]
    sources: list[SourceFile]
    page_counts: list[int]

    @classmethod
    def load(cls, name: str, paths: list[Path]) -> PageSet:
        sources = [identify_file(str(p))[0] for p in paths]
        return cls(name, paths, sources, [page_count(p) for p in paths])

    @property
    def pages(self) -> int:
        return sum(self.page_counts)


@dataclass
class RunResult:
    pages: int
    sizes: list[tuple[int, int]] | None = None  # (width, height) per page, where known


@dataclass
class Method:
    name: str
    run: Callable[[PageSet], RunResult]
    fixed_cost: bool = False  # a baseline row (no pages), subtracted from the Beam row
    rounds_s: list[float] = field(default_factory=list)
    result: RunResult | None = None


BARE_RENDER = "bare pypdfium2 render only"
BARE_PNG1 = "bare pypdfium2 render + PNG1"
WORKER_DEFAULT = "HelperProcess, RenderConfig()"
WORKER_NO_TEXT = "HelperProcess, no text layer"
WORKER_POPPLER = "HelperProcess, pdf2image"
PLAN_AND_RENDER = "plan + render on FnApiRunner"


def bare_method(encode: bool) -> Callable[[PageSet], RunResult]:
    def run(pages: PageSet) -> RunResult:
        sizes = [s for p in pages.paths for s in bare_render(p, RenderConfig(), encode)]
        return RunResult(len(sizes), sizes)

    return run


def worker_method(worker: HelperProcess, cfg: RenderConfig) -> Callable[[PageSet], RunResult]:
    def run(pages: PageSet) -> RunResult:
        sizes = [
            size
            for source, n_pages in zip(pages.sources, pages.page_counts, strict=True)
            for size in worker_render(worker, source, n_pages, cfg)
        ]
        return RunResult(len(sizes), sizes)

    return run


def plan_and_render_method(empty: bool) -> Callable[[PageSet], RunResult]:
    def run(pages: PageSet) -> RunResult:
        n_pages, failures = beam_split([] if empty else pages.sources, RenderConfig())
        if failures:
            raise RuntimeError(f"PlanAndRender reported {failures} failures")
        return RunResult(n_pages)

    return run


def throughput_methods(workers: dict[str, HelperProcess]) -> list[Method]:
    return [
        Method(BARE_RENDER, bare_method(encode=False)),
        Method(BARE_PNG1, bare_method(encode=True)),
        Method(WORKER_DEFAULT, worker_method(workers["default"], RenderConfig())),
        Method(
            WORKER_NO_TEXT,
            worker_method(workers["notext"], RenderConfig(extract_text_layer=False)),
        ),
        Method(
            WORKER_POPPLER, worker_method(workers["poppler"], RenderConfig(renderer="pdf2image"))
        ),
        Method(PLAN_AND_RENDER, plan_and_render_method(empty=False)),
        Method("  (same pipeline, no input)", plan_and_render_method(empty=True), fixed_cost=True),
    ]


def start_workers(corpus: Path) -> tuple[dict[str, HelperProcess], float]:
    """Start the helpers before timing (the stage starts one per DoFn instance, once)."""
    data = (corpus / "pdf" / "good" / "pdfjs_vertical.pdf").read_bytes()
    workers = {key: HelperProcess() for key in ("default", "notext", "poppler")}
    start_s = [timed(w.count_pages, "0" * 64, data, None)[0] for w in workers.values()]
    return workers, statistics.median(start_s)


def bench_throughput(corpus: Path, rounds: int) -> dict:
    workers, helper_start_s = start_workers(corpus)
    warmup = [identify_file(str(corpus / "pdf" / "good" / "pdfjs_vertical.pdf"))[0]]
    beam_split(warmup, RenderConfig())  # the first Beam run pays for lazy imports
    results = {}
    try:
        for set_name, files in PAGE_SETS.items():
            pages = PageSet.load(set_name, [corpus / "pdf" / "good" / f for f in files])
            methods = throughput_methods(workers)
            for _ in range(rounds):  # interleave the methods so drift hits all of them
                for method in methods:
                    seconds, method.result = timed(method.run, pages)
                    method.rounds_s.append(seconds)
            results[set_name] = summarize_throughput(methods, pages)
    finally:
        for worker in workers.values():
            worker.close()
    return {"helper_start_s": helper_start_s, "sets": results}


def summarize_throughput(methods: list[Method], pages: PageSet) -> dict:
    by_name = {m.name: m for m in methods}
    bare_s = statistics.median(by_name[BARE_PNG1].rounds_s)
    fixed_s = statistics.median(next(m for m in methods if m.fixed_cost).rounds_s)
    rows = [throughput_row(m, bare_s, fixed_s) for m in methods]
    for row in rows:
        if row.get("pages", pages.pages) != pages.pages:
            raise RuntimeError(f"{row['method']} produced {row['pages']} of {pages.pages} pages")
    reference = by_name[BARE_PNG1].result.sizes
    poppler = by_name[WORKER_POPPLER].result.sizes
    pdfium_sizes = [
        m.result.sizes for m in methods if m.result.sizes is not None and m.name != WORKER_POPPLER
    ]
    return {
        "files": [p.name for p in pages.paths],
        "pages": pages.pages,
        "pypdfium2_sizes_match": all(s == reference for s in pdfium_sizes),
        "pdf2image_pages_with_other_size": sum(
            a != b for a, b in zip(reference, poppler, strict=True)
        ),
        "rows": rows,
    }


def throughput_row(method: Method, bare_s: float, fixed_s: float) -> dict:
    median_s = statistics.median(method.rounds_s)
    row: dict = {"method": method.name, "median_s": median_s, "rounds_s": method.rounds_s}
    if method.fixed_cost:
        return row
    n_pages = method.result.pages
    row |= {
        "pages": n_pages,
        "pages_per_s": n_pages / median_s,
        "ms_per_page": 1000 * median_s / n_pages,
        "time_vs_bare_png1": median_s / bare_s,
    }
    if method.name == PLAN_AND_RENDER:
        net_s = median_s - fixed_s
        row |= {"net_of_fixed_s": net_s, "net_time_vs_bare_png1": net_s / bare_s}
    return row


# ------------------------------------------------------------------ 3: formats


ENCODERS: dict[str, dict] = {
    "png level 1 (vlbeam)": {"format": "PNG", "compress_level": 1},
    "png level 6": {"format": "PNG", "compress_level": 6},
    "webp lossless m0": {"format": "WEBP", "lossless": True, "method": 0},
    "jpeg q95": {"format": "JPEG", "quality": 95},
}


def bench_formats(corpus: Path, reps: int) -> list[dict]:
    rows = []
    cfg = RenderConfig()
    for name, page_number, kind in FORMAT_PAGES:
        doc = pdfium.PdfDocument(corpus / "pdf" / "good" / name)
        try:
            image = _render_page_rgb(doc, page_number - 1, cfg.target_long_side)
        finally:
            doc.close()
        rows.extend(format_rows(image, f"{name} p{page_number}", kind, reps))
    return rows


def format_rows(image: Image.Image, page: str, kind: str, reps: int) -> list[dict]:
    reference = np.asarray(image)
    raw = reference.nbytes
    rows = []
    for label, params in ENCODERS.items():
        enc_s, dec_s = [], []
        for _ in range(reps):
            buf = io.BytesIO()
            seconds, _ = timed(image.save, buf, **params)
            enc_s.append(seconds)
            data = buf.getvalue()
            seconds, decoded = timed(decode, data)
            dec_s.append(seconds)
        rows.append(
            {
                "page": page,
                "kind": kind,
                "size_px": list(image.size),
                "format": label,
                "kib": len(data) / 1024,
                "vs_raw_rgb": len(data) / raw,
                "encode_ms": 1000 * statistics.median(enc_s),
                "decode_ms": 1000 * statistics.median(dec_s),
                "psnr_db": psnr(reference, np.asarray(decoded)),
            }
        )
    return rows


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * np.log10(255**2 / mse)


# ------------------------------------------------------------------ 4: memory


def build_repeated_pdf(src: Path, n_pages: int, dest: Path, shared: bool) -> None:
    """A PDF of `n_pages` pages cycling through `src`'s pages.

    shared: one `import_pages` call, so repeats share their objects (small file);
    otherwise one call per repeat, so every repeat has its own copies (large file)."""
    source = pdfium.PdfDocument(src)
    out = pdfium.PdfDocument.new()
    try:
        if shared:
            out.import_pages(source, [i % len(source) for i in range(n_pages)])
        else:
            while len(out) < n_pages:
                out.import_pages(source, list(range(min(len(source), n_pages - len(out)))))
        out.save(dest)
    finally:
        out.close()
        source.close()


def high_water_mark(pid: int | str = "self") -> int:
    """VmHWM (peak RSS of the process's current image, bytes), 0 where unknown.

    Unlike getrusage's ru_maxrss it is reset by exec, so it does not inherit the peak of
    the (large) process that spawned this one."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_child(path: str) -> None:
    """Entry point of the measured subprocess: one PlanAndRender pipeline, JSON on stdout."""
    logging.getLogger().setLevel(logging.WARNING)
    baseline = high_water_mark()  # interpreter + imports (Beam, numpy, PIL, pdfium)
    source, _ = identify_file(path)
    seconds, (pages, failures) = timed(beam_split, [source], RenderConfig())
    report = {
        "pages": pages,
        "failures": failures,
        "seconds": seconds,
        "driver_after_imports_bytes": baseline,
        "driver_peak_bytes": high_water_mark(),
    }
    print(json.dumps(report), flush=True)


@dataclass
class TreeSample:
    t: float
    rss: dict[int, int]  # pid -> current RSS (bytes); the driver first


def sample_tree(popen: subprocess.Popen) -> tuple[list[TreeSample], dict[int, int]]:
    """Sample the RSS of the driver and its descendants until the driver exits.

    Returns the samples and each helper's last-seen VmHWM (its peak up to then)."""
    root = psutil.Process(popen.pid)
    samples: list[TreeSample] = []
    helper_peaks: dict[int, int] = {}
    start = time.monotonic()
    while popen.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = {p.pid: p.memory_info().rss for p in procs}
        except psutil.Error:  # a process ended between listing and reading
            rss = {}
        for pid in list(rss)[1:]:
            helper_peaks[pid] = max(helper_peaks.get(pid, 0), high_water_mark(pid))
        if rss:
            samples.append(TreeSample(time.monotonic() - start, rss))
        time.sleep(SAMPLE_INTERVAL_S)
    return samples, helper_peaks


def measure_memory(label: str, path: Path) -> dict:
    with tempfile.TemporaryFile() as err:
        popen = subprocess.Popen(
            [sys.executable, __file__, "--memory-child", str(path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        samples, helper_peaks = sample_tree(popen)
        out = popen.stdout.read()
        if popen.wait() != 0:
            err.seek(0)
            raise RuntimeError(f"memory child failed on {path}:\n{err.read().decode()[-3000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    return memory_row(label, path, report, samples, helper_peaks)


def growth_per_page(samples: list[TreeSample], pages_per_s: float) -> float | None:
    """Slope of the tree's RSS while rendering (its first fifth left out), KiB per page.

    Rendering runs while both helpers (planner and renderer) are alive. None when the
    window lasts under MIN_GROWTH_WINDOW_S: the renderer's RSS swings by a page buffer or
    two from page to page, so a slope over a short run is noise."""
    rendering = [s for s in samples if len(s.rss) >= 3]
    tail = rendering[len(rendering) // 5 :]
    if len(tail) < 5 or tail[-1].t - tail[0].t < MIN_GROWTH_WINDOW_S:
        return None
    t = np.array([s.t for s in tail])
    rss = np.array([sum(s.rss.values()) for s in tail], dtype=np.float64)
    slope_bytes_per_s = np.polyfit(t, rss, 1)[0]
    return float(slope_bytes_per_s / pages_per_s / 1024)


def rss_series(samples: list[TreeSample], max_points: int = 200) -> list[list[float]]:
    """[t, driver MiB, helpers MiB...] per sample, thinned to at most `max_points`."""
    step = max(1, len(samples) // max_points)
    return [[round(s.t, 2), *(mb(v) for v in s.rss.values())] for s in samples[::step]]


def memory_row(
    label: str, path: Path, report: dict, samples: list[TreeSample], helper_peaks: dict[int, int]
) -> dict:
    pages_per_s = report["pages"] / report["seconds"]
    tree = [sum(s.rss.values()) for s in samples]
    return {
        "pdf": label,
        "file_mib": mb(path.stat().st_size),
        "pages": report["pages"],
        "failures": report["failures"],
        "pipeline_s": report["seconds"],
        "pages_per_s": pages_per_s,
        "driver_after_imports_mib": mb(report["driver_after_imports_bytes"]),
        "driver_peak_mib": mb(report["driver_peak_bytes"]),
        # in start order: the planner's helper (PlanWork), then the renderer's
        "helper_peaks_mib": [mb(helper_peaks[pid]) for pid in sorted(helper_peaks)],
        "tree_peak_mib": mb(max(tree, default=0)),
        "tree_growth_kib_per_page": growth_per_page(samples, pages_per_s),
        "samples": len(samples),
        "rss_series_mib": rss_series(samples),
    }


def bare_ms_per_page(path: Path, rounds: int, max_pages: int = 100) -> float:
    """In-process reference for a memory run's pages/s: the bare loop (render + PNG1) over
    the same PDF, every page or an evenly strided sample of `max_pages`."""
    stride = max(1, page_count(path) // max_pages)
    runs = [timed(bare_render, path, RenderConfig(), True, stride) for _ in range(rounds)]
    seconds = statistics.median(s for s, _ in runs)
    return 1000 * seconds / len(runs[0][1])


def bench_memory(corpus: Path, big_pages: int, workdir: Path, rounds: int) -> dict:
    src = corpus / "pdf" / "good" / BIG_SOURCE
    shared, distinct = workdir / "big_shared.pdf", workdir / "big_distinct.pdf"
    build_repeated_pdf(src, big_pages, shared, shared=True)
    build_repeated_pdf(src, big_pages, distinct, shared=False)
    rows = []
    for label, path, bare_rounds in (
        (f"{BIG_SOURCE} ({page_count(src)} p)", src, rounds),
        (f"{big_pages} p, shared objects", shared, 1),
        (f"{big_pages} p, own objects", distinct, 1),
    ):
        row = measure_memory(label, path)
        row["bare_png1_ms_per_page"] = bare_ms_per_page(path, bare_rounds)
        row["time_vs_bare_png1"] = 1000 / row["pages_per_s"] / row["bare_png1_ms_per_page"]
        rows.append(row)
    return {"source": BIG_SOURCE, "rows": rows}


# ------------------------------------------------------------------ report


def print_throughput(result: dict) -> None:
    print(f"\nhelper start + first open: {1000 * result['helper_start_s']:.0f} ms (not in rows)")
    for set_name, summary in result["sets"].items():
        rows = [
            (
                r["method"],
                r.get("pages", ""),
                r["median_s"],
                r.get("pages_per_s", ""),
                r.get("ms_per_page", ""),
                r.get("time_vs_bare_png1", ""),
                r.get("net_time_vs_bare_png1", ""),
            )
            for r in summary["rows"]
        ]
        title = f"1+2. throughput, {set_name}: {', '.join(summary['files'])} ({summary['pages']} p)"
        headers = ("method", "pages", "median s", "pages/s", "ms/page", "x bare+PNG1", "x net")
        print_table(title, headers, rows)
        if not summary["pypdfium2_sizes_match"]:
            print("  WARNING: pypdfium2-based methods rendered different pixel sizes")
        if summary["pdf2image_pages_with_other_size"]:
            print(
                f"  note: pdf2image pages 1 px off pypdfium2's size: "
                f"{summary['pdf2image_pages_with_other_size']} of {summary['pages']}"
            )


def print_formats(rows: list[dict]) -> None:
    table = [
        (
            r["page"],
            r["format"],
            r["kib"],
            r["vs_raw_rgb"],
            r["encode_ms"],
            r["decode_ms"],
            "lossless" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}",
        )
        for r in rows
    ]
    headers = ("page", "format", "KiB", "x raw RGB", "encode ms", "decode ms", "PSNR dB")
    print_table("3. transport format (1288 px long side)", headers, table)


def print_memory(memory: dict) -> None:
    rows = [
        (
            r["pdf"],
            r["file_mib"],
            r["pages"],
            r["pages_per_s"],
            r["driver_after_imports_mib"],
            r["driver_peak_mib"],
            " + ".join(f"{v:g}" for v in r["helper_peaks_mib"]),
            r["tree_peak_mib"],
            "n/a" if r["tree_growth_kib_per_page"] is None else r["tree_growth_kib_per_page"],
            r["time_vs_bare_png1"],
        )
        for r in memory["rows"]
    ]
    headers = (
        "pdf",
        "file MiB",
        "pages",
        "pages/s",
        "driver imports MiB",
        "driver peak MiB",
        "helper peaks MiB",
        "tree peak MiB",
        "growth KiB/page",
        "x bare+PNG1",
    )
    print_table("4. peak memory, plan + render on FnApiRunner (fresh process)", headers, rows)
    print(
        "  x bare+PNG1: the pipeline's time per page (start-up included) over the bare loop's "
        "on the same PDF (big PDFs: an evenly strided sample of 100 pages)"
    )


def key_ratios(throughput: dict, memory: dict) -> dict:
    ratios: dict[str, dict[str, float]] = {}
    for set_name, summary in throughput["sets"].items():
        rows = {r["method"]: r for r in summary["rows"]}
        worker, split = rows[WORKER_DEFAULT], rows[PLAN_AND_RENDER]
        ratios[set_name] = {
            "worker_vs_bare_png1": worker["time_vs_bare_png1"],
            "worker_no_text_vs_bare_png1": rows[WORKER_NO_TEXT]["time_vs_bare_png1"],
            "splitpages_vs_bare_png1": split["time_vs_bare_png1"],
            "splitpages_net_of_fixed_vs_bare_png1": split["net_time_vs_bare_png1"],
            "png1_share_of_bare_time": 1
            - rows[BARE_RENDER]["median_s"] / rows[BARE_PNG1]["median_s"],
            "pdf2image_vs_pypdfium2_worker": rows[WORKER_POPPLER]["median_s"] / worker["median_s"],
        }
    small, *big = memory["rows"]
    ratios["memory"] = {
        f"tree_peak {r['pdf']} vs {small['pages']} p": r["tree_peak_mib"] / small["tree_peak_mib"]
        for r in big
    }
    ratios["big_pdf_splitpages_vs_bare_png1"] = {
        r["pdf"]: r["time_vs_bare_png1"] for r in memory["rows"]
    }
    return ratios


def print_ratios(ratios: dict) -> None:
    print("\n## key ratios (time ratios: >1 means slower than the reference)")
    for name, values in ratios.items():
        text = ", ".join(f"{k} {v:.2f}" for k, v in values.items())
        print(f"{name}: {text}")


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pypdfium2": pdfium.version.PYPDFIUM_INFO.version,
        "pdfium": pdfium.version.PDFIUM_INFO.version,
        "apache_beam": beam.__version__,
        "pillow": Image.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", help="corpus folder (default: $VLBEAM_CORPUS, ../shared/corpus)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--quick", action="store_true", help="~30 s smoke run (fewer rounds/pages)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (default 3, quick 1)")
    parser.add_argument("--big-pages", type=int, help="pages of the big PDF (default 1000)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    logging.basicConfig(level=logging.WARNING)
    corpus = resolve_corpus(args.corpus)
    rounds = args.rounds or (1 if args.quick else 3)
    big_pages = args.big_pages or (100 if args.quick else 1000)
    env = environment()
    print(
        f"load average (1 min) at start: {env['loadavg_1min_at_start']:.2f} on {env['cpus']} CPUs"
    )
    started = time.perf_counter()

    throughput = bench_throughput(corpus, rounds)
    print_throughput(throughput)
    formats = bench_formats(corpus, reps=2 if args.quick else 5)
    print_formats(formats)
    with tempfile.TemporaryDirectory(prefix="vlbeam-bench-") as workdir:
        memory = bench_memory(corpus, big_pages, Path(workdir), rounds)
    print_memory(memory)
    ratios = key_ratios(throughput, memory)
    print_ratios(ratios)
    env["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at end: {env['loadavg_1min_at_end']:.2f}")

    results = {
        "environment": env,
        "args": {"quick": args.quick, "rounds": rounds, "big_pages": big_pages},
        "corpus": str(corpus),
        "throughput": throughput,
        "formats": formats,
        "memory": memory,
        "ratios": ratios,
        "total_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=_jsonable))
    print(f"\nwrote {args.out} ({results['total_s']:.0f} s)")


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value)}")


if __name__ == "__main__":
    main()
