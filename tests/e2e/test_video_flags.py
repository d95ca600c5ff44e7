"""`--fps`, `--max-frames-per-window` and `--max-pixels-per-frame` on the corpus's
high-resolution videos (1080p, 3026x1386 variable frame rate, 1080p turned by its rotation
metadata): frame size, frame count and the kept times, checked against the files' own
presentation times, through the flags, the pure decoder, the helper process and the job."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from tests.pipeline_helpers import fake_handler, read_table, run_job
from vlbeam.pipeline.options import VlbeamOptions, video_config
from vlbeam.schemas.elements import VLResult
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.video_decode import (
    SamplingConfig,
    open_container,
    probe,
    sample_window,
)

# (file, window start, window end, --fps, --max-frames-per-window, --max-pixels-per-frame,
#  displayed size as stored in the file, after its rotation)
CASES = [
    # 25 fps 1080p: 30 instants at 5 fps thinned to 7, a window that needs a seek
    ("good/moviepy_smpte-2997.mp4", 2.0, 8.0, 5.0, 7, 30_000, (1920, 1080)),
    # HEVC 1080p: 20 instants at 2 fps thinned to 6
    ("good/mediabunny_video-h265.mp4", 0.0, 10.0, 2.0, 6, 50_000, (1920, 1080)),
    # variable frame rate, irregular gaps: fewer frames than instants, never one twice
    ("good/mediabunny_cursed-vfr.mp4", 3.0, 8.7, 2.0, 128, 40_000, (3026, 1386)),
    # rotation -90: frames come out upright, portrait
    ("good/mediabunny_rotate-buck-bunny.mp4", 0.0, 2.0, 4.0, 5, 20_000, (1080, 1920)),
]
IDS = [Path(case[0]).stem for case in CASES]


def presentation_times(path: Path) -> list[float]:
    """Every frame's presentation time in seconds from the first frame presented, from one
    demux pass over the packets (no decoding, no vlbeam code). On these files the first frame
    presented is also the stream's start time."""
    import av

    with av.open(str(path)) as container:
        [stream] = [
            s for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]  # fmt: skip
        pts = {p.pts for p in container.demux(stream) if p.pts is not None}
        assert min(pts) == (stream.start_time or 0)
        return sorted(float((t - min(pts)) * stream.time_base) for t in pts)


def expected_times(times, start, end, fps, max_frames) -> list[float]:
    """README: instants every 1/fps from the window start, thinned evenly to max_frames; for
    each, the first frame presented at or after it (each frame once, inside the window)."""
    span = end - start
    count, step = math.ceil(span * fps - 1e-9), 1.0 / fps
    if count > max_frames:
        count, step = max_frames, span / max_frames
    kept: list[float] = []
    for i in range(count):
        first = next((t for t in times if t >= start + i * step - 1e-6), None)
        if first is not None and first < end and first not in kept:
            kept.append(first)
    return kept


def check_frame_size(size: tuple[int, int], displayed: tuple[int, int], max_pixels: int):
    width, height = size
    assert width * height <= max_pixels, (size, max_pixels)
    assert width * height >= 0.9 * max_pixels, (size, max_pixels)  # scaled into, not far under
    assert width % 2 == 0 and height % 2 == 0
    assert width / height == pytest.approx(displayed[0] / displayed[1], rel=0.03)


def test_the_flags_reach_the_sampling_config():
    opts = PipelineOptions(
        ["--fps=5", "--max-frames-per-window=7", "--max-pixels-per-frame=30000"]
    ).view_as(VlbeamOptions)
    assert video_config(opts).sampling == SamplingConfig(fps=5, max_frames=7, max_pixels=30_000)
    assert video_config(PipelineOptions([]).view_as(VlbeamOptions)).sampling == SamplingConfig()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pure_decoder_and_helper_process_honour_the_limits(case, corpus):
    name, start, end, fps, max_frames, max_pixels, displayed = case
    path = corpus / "video" / name
    cfg = SamplingConfig(fps=fps, max_frames=max_frames, max_pixels=max_pixels)
    expected = expected_times(presentation_times(path), start, end, fps, max_frames)
    assert len(expected) >= 5

    container = open_container(str(path))
    try:
        info = probe(container)
        frames, errors = sample_window(container, info, start, end, cfg)
    finally:
        container.close()
    assert errors == 0 and (info.width, info.height) == displayed
    assert [f.time_s for f in frames] == pytest.approx(expected, abs=1e-6)
    assert len(frames) <= max_frames
    for frame in frames:
        image = Image.open(io.BytesIO(frame.image))
        assert image.size == (frame.width, frame.height)
        check_frame_size(image.size, displayed, max_pixels)

    helper = HelperProcess()
    try:
        assert helper.probe_video(str(path), 60) == info
        remote, remote_errors = helper.sample_video(str(path), start, end, cfg, 60)
    finally:
        helper.close()
    assert remote_errors == 0
    assert [(f.time_s, f.width, f.height) for f in remote] == [
        (f.time_s, f.width, f.height) for f in frames
    ]


def sizes_answer(_model, batch, _cfg):
    """A model double answering 'none' plus the size of every frame it was shown."""
    results = []
    for request in batch:
        sizes = [Image.open(io.BytesIO(data)).size for data in request.images]
        results.append(VLResult(text="none " + " ".join(f"{w}x{h}" for w, h in sizes),
                                input_tokens=1, output_tokens=1, finish_reason="stop",
                                latency_s=0.0))  # fmt: skip
    return results


def test_the_job_honours_the_flags_on_1080p_video(corpus, tmp_path):
    name, fps, max_frames, max_pixels = "good/moviepy_smpte-2997.mp4", 5.0, 7, 30_000
    path = corpus / "video" / name
    out = tmp_path / "out"
    run_job(
        [str(path)], out, "--tasks=grounding", "--window-seconds=6",
        "--window-overlap-seconds=1", f"--fps={fps:g}", f"--max-frames-per-window={max_frames}",
        f"--max-pixels-per-frame={max_pixels}", handler=fake_handler(sizes_answer),
    )  # fmt: skip
    windows = sorted(read_table(out, "video_windows"), key=lambda r: r["window_index"])
    container = open_container(str(path))
    duration = probe(container).duration_s  # 10.04 s (the stream's own duration)
    container.close()
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0, 6), (5, round(duration, 6))]
    times = presentation_times(path)
    for window in windows:
        expected = expected_times(times, window["start_s"], window["end_s"], fps, max_frames)
        assert window["frame_times_s"] == pytest.approx(expected, abs=1e-6)
        assert window["num_frames"] == len(expected) == max_frames
        shown = window["raw_output"].split()[1:]
        assert len(shown) == max_frames
        for size in shown:
            width, height = map(int, size.split("x"))
            check_frame_size((width, height), (1920, 1080), max_pixels)
