"""The helper processes' time bounds through the job: a page render or a video window decode
that hangs ends as one failure row (`RenderTimeout`) after `--render-timeout-s` /
`--decode-timeout-s`, the hung helper is replaced, and the rest of the file and the run go on.

The hang is real, in the helper process: a `sitecustomize` module on the helpers' PYTHONPATH
wraps the renderer and the decoder so that page 2 / the window starting at 12 s sleep for ten
minutes (while a flag file says so; the helpers of other tests never load it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import fake_handler, inked_page, read_table, run_job
from tests.video_fixtures import constant_rate, write_video

HOOK = """
import os, time
_flag = os.environ.get("VLBEAM_TEST_HANG_FLAG")
if _flag:
    from vlbeam.transforms.media import pdf_render, video_decode

    def _hangs(what):
        try:
            with open(_flag) as handle:
                return what in handle.read().split()
        except OSError:
            return False

    _render, _sample = pdf_render.render_pdf_page, video_decode.sample_window

    def render_pdf_page(doc, page_number, *args, **kwargs):
        if _hangs(f"render:{page_number}"):
            time.sleep(600)
        return _render(doc, page_number, *args, **kwargs)

    def sample_window(container, info, start_s, *args, **kwargs):
        if _hangs(f"decode:{start_s:g}"):
            time.sleep(600)
        return _sample(container, info, start_s, *args, **kwargs)

    pdf_render.render_pdf_page, video_decode.sample_window = render_pdf_page, sample_window
"""
BOUND_S = 3.0


@pytest.fixture
def hang(tmp_path, monkeypatch):
    """Call with what should hang ("render:2", "decode:12"); the flag goes at teardown."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    flag = tmp_path / "hang.flag"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook),
                       os.environ.get("PYTHONPATH")])))  # fmt: skip
    monkeypatch.setenv("VLBEAM_TEST_HANG_FLAG", str(flag))
    yield lambda *what: flag.write_text(" ".join(what))
    flag.unlink(missing_ok=True)


def answers(_model, batch, _cfg):
    from vlbeam.schemas.elements import VLResult

    return [VLResult(text="[]" if r.frame_times_s else "seen", input_tokens=1, output_tokens=1,
                     finish_reason="stop", latency_s=0.0) for r in batch]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_hung_render_and_a_hung_decode_become_failure_rows(tmp_path, hang):
    src = tmp_path / "in"
    src.mkdir()
    pages = [inked_page((200, 260), label=f"page {n}") for n in (1, 2, 3)]
    pages[0].save(src / "three.pdf", save_all=True, append_images=pages[1:])
    write_video(src / "clip.mp4", constant_rate(30, 2), None, size=(64, 48))
    hang("render:2", "decode:12")
    out = tmp_path / "out"
    started = time.monotonic()
    run_job([f"{src}/*"], out, f"--render-timeout-s={BOUND_S:g}",
            f"--decode-timeout-s={BOUND_S:g}", "--render-workers=1", "--pages-per-task=1",
            "--window-seconds=16", "--window-overlap-seconds=4", "--fps=1",
            handler=fake_handler(answers))  # fmt: skip
    took = time.monotonic() - started
    failures = {
        (Path(f["source_uri"]).name, f["stage"], f["unit"], f["error_type"]): f["message"]
        for f in read_table(out, "failures")
    }
    assert sorted(failures) == [
        ("clip.mp4", "decode", 1, "RenderTimeout"),
        ("three.pdf", "render", 2, "RenderTimeout"),
    ]
    assert f"took longer than {BOUND_S:g} s" in failures[("three.pdf", "render", 2,
                                                           "RenderTimeout")]  # fmt: skip
    assert f"took longer than {BOUND_S:g} s" in failures[("clip.mp4", "decode", 1,
                                                          "RenderTimeout")]  # fmt: skip
    # the rest of each file went on, in a fresh helper
    pages_read = sorted(p["page_number"] for p in read_table(out, "pages"))
    windows = sorted(w["window_index"] for w in read_table(out, "video_windows"))
    assert pages_read == [1, 3] and windows == [0, 2]
    docs = {Path(d["source_uri"]).name: d["status"] for d in read_table(out, "documents")}
    assert docs == {"three.pdf": "partial", "clip.mp4": "partial"}
    assert took < 45  # bounded by the two time bounds, not the ten-minute hangs
