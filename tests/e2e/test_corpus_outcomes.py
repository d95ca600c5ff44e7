"""Every hostile file of the corpus comes to one pinned outcome: the exact rows it yields, or the
exact failure (stage, unit, type), never "rows or failures". One real run over corpus/pdf/bad,
corpus/video/bad and the file in good/ that has nothing to look at, with a model double.

A change of outcome (a renderer, decoder or sniffing change) fails here by name; if the new
outcome is the better one, pin it here in the same change."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.pipeline_helpers import fake_handler, read_table, run_job
from vlbeam.schemas.elements import VLResult

AUDIO_ONLY = "video/good/mediabunny_multiple-aac-tracks_audio-only.mp4"
FLAGS = (
    "--target-long-side=256", "--render-timeout-s=30", "--window-seconds=30",
    "--window-overlap-seconds=2", "--fps=1", "--max-pixels-per-frame=16384",
    "--decode-timeout-s=60", "--run-id=hostile",
)  # fmt: skip


def failed(kind: str, stage: str, error: str, message: str, **doc) -> dict:
    """A file that fails as a whole: one failure row without a unit, no pages, no windows."""
    return dict(kind=kind, status="failed", failures=[(stage, None, error, message)], **doc)


def pdf_ok(size: tuple[int, int], blank: bool = False) -> dict:
    """A one-page PDF whose page is rendered (long side 256) and read by the model, or (blank)
    found blank and given an empty text without a model call."""
    return dict(kind="pdf", status="ok", num_pages=1, pages={1: size}, blank=blank)


def video_ok(duration: float, frames: int) -> dict:
    """A short video: one window over the whole of it, with this many frames."""
    return dict(kind="video", status="ok", duration=duration, windows=[(0, 0.0, duration, frames)])


def empty_window(index: int, start: float, end: float) -> tuple:
    span = rf"\({start:.1f}-{end:.1f} s\)"
    return (
        "decode",
        index,
        "EmptyWindow",
        rf"^no frame could be decoded in window {index} {span}$",
    )


BROKEN_XREF = r"^not a readable PDF: its structure \(xref, page tree\) is broken$"
NEEDS_PASSWORD = r"^PDF is encrypted with a user password; pass --pdf-password"
CANNOT_OPEN = r"^cannot open as a video: .*Invalid data found when processing input"

# corpus path → what it must come to
OUTCOMES: dict[str, dict] = {
    # -- PDFs
    "pdf/bad/zero_bytes.pdf": failed(
        "unknown", "sniff", "EmptyFile", r"^file is empty \(0 bytes\)$"
    ),
    "pdf/bad/tracemonkey_truncated_50pct.pdf": failed(
        "pdf", "split", "InvalidPdf", r"^not a readable PDF: the file is truncated or damaged"
    ),
    "pdf/bad/ocrmypdf_invalid.pdf": failed("pdf", "split", "InvalidPdf", BROKEN_XREF),
    "pdf/bad/qpdf_empty_zero_pages.pdf": failed("pdf", "split", "InvalidPdf", BROKEN_XREF),
    "pdf/bad/samplefiles_unreadablemetadata.pdf": failed("pdf", "split", "InvalidPdf", BROKEN_XREF),
    "pdf/bad/pdfjs_Brotli-Prototype-FileA.pdf": failed("pdf", "split", "InvalidPdf", BROKEN_XREF),
    "pdf/bad/samplefiles_libreoffice-writer-password.pdf": failed(
        "pdf", "split", "EncryptedPdf", NEEDS_PASSWORD
    ),
    "pdf/bad/pdfjs_saslprep-r6.pdf": failed("pdf", "split", "EncryptedPdf", NEEDS_PASSWORD),
    # claims a page 2147483647 pt tall: counted, then refused at render
    "pdf/bad/pdfjs_poppler-85140-0.pdf": dict(
        kind="pdf",
        status="failed",
        num_pages=1,
        failures=[("render", 1, "PageTooLarge", r"^page size 595 x 2\.14748e\+09 is beyond")],
    ),
    # circular /Pages tree: page 1 renders, page 2 cannot be loaded
    "pdf/bad/pdfjs_Pages-tree-refs.pdf": dict(
        kind="pdf",
        status="partial",
        num_pages=2,
        pages={1: (181, 256)},
        failures=[("render", 2, "InvalidPdf", r"^page 2 cannot be loaded: ")],
    ),
    # recoverable: rendered and read
    "pdf/bad/ocrmypdf_hugemono.pdf": pdf_ok((256, 256)),  # 8400 pt square JBIG2
    "pdf/bad/pdfjs_bomb_giant.pdf": pdf_ok((198, 256)),  # hangs poppler, not pdfium
    "pdf/bad/pdfjs_empty_protected.pdf": pdf_ok((198, 256), blank=True),  # owner password only
    "pdf/bad/pdfjs_issue6069.pdf": pdf_ok((256, 32)),  # junk before %PDF
    "pdf/bad/pdfjs_poppler-67295-0.pdf": pdf_ok((198, 256)),  # page count -2147483648
    "pdf/bad/pdfjs_GHOSTSCRIPT-698804-1-fuzzed.pdf": pdf_ok((198, 256), blank=True),
    "pdf/bad/pdfjs_js-buttons.pdf": pdf_ok((198, 256)),
    "pdf/bad/pdfjs_autoprint.pdf": pdf_ok((198, 256), blank=True),
    "pdf/bad/pdfjs_xfa_filled_imm1344e.pdf": pdf_ok((198, 256)),  # XFA placeholder page
    # -- videos
    "video/bad/moviepy_result_zero_bytes.webm": failed(
        "unknown", "sniff", "EmptyFile", r"^file is empty \(0 bytes\)$"
    ),
    "video/bad/moviepy_with-attached-pic.mp3": failed(
        "audio", "sniff", "UnsupportedInput", r"^unsupported file type \(audio without video\)"
    ),
    "video/bad/cockatoo_truncated_50pct.mp4": failed("video", "split", "InvalidVideo", CANNOT_OPEN),
    "video/bad/filetype_fixture-corrupt.mkv": failed("video", "split", "InvalidVideo", CANNOT_OPEN),
    "video/bad/mp4parse_chunk_out_of_range.mp4": failed(
        "video", "split", "InvalidVideo", CANNOT_OPEN
    ),
    AUDIO_ONLY: failed("video", "split", "NoVideoStream", r"^file has no video stream$"),
    # the header claims 1132 s, the data holds under 2 s: window 0 is read, the 40 others fail
    "video/bad/filetype_fixture2_truncated.mkv": dict(
        kind="video",
        status="partial",
        duration=1132.048,
        windows=[(0, 0.0, 30.0, 2)],
        failures=[empty_window(i, 28.0 * i, min(28.0 * i + 30, 1132.048)) for i in range(1, 41)],
    ),
    # recoverable: decoded and grounded
    "video/bad/video_corrupt_middle.mp4": video_ok(5.0, 5),
    "video/bad/moviepy_no_duration.webm": video_ok(4.938, 5),
    "video/bad/imageio_test_h264_in.webm": video_ok(3.137, 4),
    # nothing decodes before the first keyframe at 2.136 s: time 0 is that first frame
    "video/bad/mediabunny_no-initial-keyframe.ts": video_ok(0.499367, 1),
    # CENC (cbcs) samples decode as if clear: the pictures show, with artifacts where the
    # encrypted blocks are (checked by eye); kept as recoverable output
    "video/bad/mp4parse_av1-clearkey-cbcs-video.mp4": video_ok(0.999984, 1),
}


def no_events(_model, batch, _cfg):
    """A model double: every page is read, every window has no event."""
    return [VLResult(text="none" if r.frame_times_s else "page", input_tokens=1, output_tokens=1,
                     finish_reason="stop", latency_s=0.0) for r in batch]  # fmt: skip


def hostile_files(corpus: Path) -> list[str]:
    """Every file the manifest calls bad, and the good/ file with no picture in it."""
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    bad = [r["path"] for r in rows if r["category"].endswith("-bad")]
    no_picture = [
        r["path"] for r in rows if r["category"] == "video-good" and r["video_codec"] == "(none)"
    ]
    return sorted(bad + no_picture)


@pytest.fixture(scope="module")
def outcome(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "out"
    run_job(
        [str(corpus / "pdf/bad/*"), str(corpus / "video/bad/*"), str(corpus / AUDIO_ONLY)],
        out, *FLAGS, handler=fake_handler(no_events),
    )  # fmt: skip

    def by_file(table: str) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = defaultdict(list)
        for row in read_table(out, table):
            rows[str(Path(row["source_uri"]).relative_to(corpus))].append(row)
        return rows

    return {t: by_file(t) for t in ("documents", "pages", "video_windows", "failures")}


def test_every_hostile_file_has_a_pinned_outcome(corpus, outcome):
    assert hostile_files(corpus) == sorted(OUTCOMES)
    assert sorted(outcome["documents"]) == sorted(OUTCOMES)  # one documents row each
    assert all(len(rows) == 1 for rows in outcome["documents"].values())


@pytest.mark.parametrize("path", sorted(OUTCOMES))
def test_outcome(path, outcome):
    want = OUTCOMES[path]
    [doc] = outcome["documents"][path]
    failures = sorted(outcome["failures"][path], key=lambda f: (f["unit"] is not None, f["unit"]))
    assert (doc["kind"], doc["status"]) == (want["kind"], want["status"])
    assert doc["num_pages"] == want.get("num_pages")
    assert doc["duration_s"] == pytest.approx(want.get("duration"), abs=1e-3)
    assert doc["num_failures"] == len(want.get("failures", []))

    pages = {p["page_number"]: (p["width_px"], p["height_px"]) for p in outcome["pages"][path]}
    assert pages == want.get("pages", {})
    blank = want.get("blank", False)
    assert [(p["text"], p["text_source"]) for p in outcome["pages"][path]] == [
        ("", "blank") if blank else ("page", "model")
    ] * len(pages)

    windows = sorted(outcome["video_windows"][path], key=lambda w: w["window_index"])
    got = [(w["window_index"], round(w["start_s"], 3), round(w["end_s"], 3), w["num_frames"])
           for w in windows]  # fmt: skip
    assert got == [(i, round(a, 3), round(b, 3), n) for i, a, b, n in want.get("windows", [])]
    for window in windows:
        times = window["frame_times_s"]
        assert times == sorted(set(times)) and window["start_s"] <= times[0] < window["end_s"]
        assert times[-1] < window["end_s"]

    assert [(f["stage"], f["unit"], f["error_type"]) for f in failures] == [
        (stage, unit, error) for stage, unit, error, _ in want.get("failures", [])
    ]
    for failure, (*_, message) in zip(failures, want.get("failures", []), strict=True):
        assert re.search(message, failure["message"]), (failure["message"], message)
