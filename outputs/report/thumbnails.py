"""Thumbnails for the report, re-rendered from each document's `source_uri` at report time in
vlbeam's helper process (the same time and memory bounds as the job): pypdfium2 for a PDF page,
PIL for an image, PyAV for the video frame at a span's start. A source that is gone or whose
content changed since the run (PDF/image: SHA-256 differs from `doc_id`; video: size differs)
gets a placeholder saying so. Thumbnails are JPEG, within a byte budget and a time budget;
past either, the rest are placeholders, counted."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from pathlib import Path

from vlbeam.outputs.report.model import Report, ReportLimits
from vlbeam.outputs.report.views import Document, Thumb
from vlbeam.schemas.ids import document_id
from vlbeam.schemas.meta import normalize_meta
from vlbeam.transforms.media.files import read_uri


def resolve_source(uri: str, source_root: str | None = None) -> str | None:
    """Where the file named by a `source_uri` is now: remote URIs as they are, a relative
    path against `source_root` first (when given), then against the current folder."""
    if "://" in uri:
        from apache_beam.io.filesystems import FileSystems

        return uri if FileSystems.exists(uri) else None
    path = Path(uri)
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        if source_root:
            candidates.append(Path(source_root) / path)
        candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return None


def _size(path: str) -> int | None:
    try:
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        return Path(path).stat().st_size
    except Exception:
        return None


def _jpeg(data: bytes, long_side: int, quality: int = 70) -> bytes:
    """Re-encode an image from the helper process as a small JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((long_side, long_side))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality, optimize=True)
        return buf.getvalue()


class Thumbnailer:
    """Makes thumbnails in vlbeam's helper process, within a byte, count and time budget."""

    def __init__(self, limits: ReportLimits, source_root: str | None = None) -> None:
        from vlbeam.transforms.media.helper_process import HelperProcess

        self.limits = limits
        self.source_root = source_root
        self.helper = HelperProcess(max_memory_mb=2048)
        self.deadline = time.monotonic() + limits.thumbnail_time_s
        self.stats = {"made": 0, "bytes": 0, "left_out": 0, "unavailable": 0}

    def close(self) -> None:
        self.helper.close()

    def _budget_left(self) -> str | None:
        if self.stats["made"] >= self.limits.max_thumbnails:
            return f"left out: the report holds at most {self.limits.max_thumbnails} thumbnails"
        if self.stats["bytes"] >= self.limits.max_thumbnail_bytes:
            mb = self.limits.max_thumbnail_bytes / 1e6
            return f"left out: the thumbnail budget ({mb:g} MB) is spent"
        if time.monotonic() > self.deadline:
            budget = self.limits.thumbnail_time_s
            return f"left out: the thumbnail time budget ({budget:g} s) ran out"
        return None

    def _keep(self, image: bytes, time_s: float | None = None) -> Thumb:
        data = _jpeg(image, self.limits.thumb_long_side)
        self.stats["made"] += 1
        self.stats["bytes"] += len(data)
        src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        return Thumb(src=src, time_s=time_s)

    def _unavailable(self, note: str) -> Thumb:
        self.stats["unavailable"] += 1
        return Thumb(note=note)

    def _left_out(self, note: str) -> Thumb:
        self.stats["left_out"] += 1
        return Thumb(note=note)

    def pages(self, doc: Document, page_numbers: list[int]) -> dict[int, Thumb]:
        from vlbeam.schemas.config import RenderConfig

        found: dict[int, Thumb] = {}
        if not page_numbers:
            return found
        note = self._budget_left()
        if note:
            return {n: self._left_out(note) for n in page_numbers}
        path = resolve_source(doc.source_uri, self.source_root)
        if path is None:
            return {
                n: self._unavailable("no thumbnail: source file not found") for n in page_numbers
            }
        try:
            data = read_uri(path)
        except OSError as exc:
            return {
                n: self._unavailable(f"no thumbnail: cannot read source ({exc})")
                for n in page_numbers
            }
        carried = normalize_meta(dict(doc.meta or ()))  # a map column reads as pairs
        if document_id(hashlib.sha256(data).hexdigest(), carried) != doc.doc_id:
            return {
                n: self._unavailable(
                    "no thumbnail: the source changed since the run (its SHA-256 is not the doc_id)"
                )
                for n in page_numbers
            }
        side = self.limits.thumb_long_side
        cfg = RenderConfig(
            target_long_side=side,
            max_pixels=side * side,
            min_short_side=4,
            image_format="jpeg",
            extract_text_layer=False,
            timeout_s=self.limits.thumb_timeout_s,
        )
        for n in page_numbers:
            note = self._budget_left()
            if note:
                found[n] = self._left_out(note)
                continue
            try:
                page = self.helper.render(doc.doc_id, data, doc.kind, n, cfg)
                found[n] = self._keep(page.image)
            except Exception as exc:  # a thumbnail that can't be made is a note, not an error
                found[n] = self._unavailable(f"no thumbnail: {type(exc).__name__}: {exc}")
        return found

    def frames(self, doc: Document, times: list[float], duration_s: float) -> dict[float, Thumb]:
        from vlbeam.transforms.media.video_decode import SamplingConfig

        found: dict[float, Thumb] = {}
        if not times:
            return found
        note = self._budget_left()
        if note:
            return {t: self._left_out(note) for t in times}
        path = resolve_source(doc.source_uri, self.source_root)
        if path is None:
            return {t: self._unavailable("no thumbnail: source file not found") for t in times}
        if doc.size_bytes is not None and _size(path) != doc.size_bytes:
            return {
                t: self._unavailable(
                    "no thumbnail: the source changed since the run (its size differs)"
                )
                for t in times
            }
        side = self.limits.thumb_long_side * 3 // 4
        cfg = SamplingConfig(
            fps=4.0, max_frames=2, max_pixels=side * side * 9 // 16, jpeg_quality=90
        )
        for t in times:
            note = self._budget_left()
            if note:
                found[t] = self._left_out(note)
                continue
            start = max(0.0, min(t, duration_s - 0.5)) if duration_s else max(0.0, t)
            end = start + 1.0 if not duration_s else min(start + 1.0, duration_s)
            try:
                frames, _errors = self.helper.sample_video(
                    path, start, end, cfg, self.limits.thumb_timeout_s
                )
            except Exception as exc:
                found[t] = self._unavailable(f"no thumbnail: {type(exc).__name__}: {exc}")
                continue
            if not frames:
                found[t] = self._unavailable(f"no thumbnail: no frame decodes at {t:.1f} s")
                continue
            found[t] = self._keep(frames[0].image, frames[0].time_s)
        return found


def add_thumbnails(report: Report, source_root: str | None = None) -> Report:
    """Thumbnails for the shown pages and for each shown span's start, in report order
    (suspects first, so a spent budget leaves out the least interesting ones)."""
    limits = report.limits
    if not limits.thumbnails:
        report.thumb_stats = {"disabled": True}
        return report
    maker = Thumbnailer(limits, source_root)
    try:
        for view in report.documents:
            doc = view.doc
            numbers = [p.page_number for p in view.pages]
            for n, thumb in maker.pages(doc, numbers).items():
                report.thumbs[("page", doc.doc_id, n)] = thumb
        for video in report.videos:
            doc = video.doc
            times: list[float] = []
            for timeline in video.timelines:
                for span in timeline.spans[: limits.max_span_thumbnails]:
                    times.append(round(span.start_s, 3))
            times = sorted(set(times))
            for t, thumb in maker.frames(doc, times, video.duration_s).items():
                report.thumbs[("frame", doc.doc_id, t)] = thumb
    finally:
        maker.close()
    report.thumb_stats = dict(maker.stats)
    return report
