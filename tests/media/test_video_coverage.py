"""Frame-exact coverage oracle for video sampling.

For every window the pipeline would plan and every sampling instant in it, the frame
sampled must be the first frame presented at or after the instant (each frame once), with
its true time. The oracle decodes every frame of the file independently of vlbeam's code
(one sequential PyAV decode from the start: no seek, no frame skipping) and derives the
expected frames from that list. It runs over every good video of the corpus and over
generated files built to break seeking: MPEG-TS starting at 11.4 s with 10 s GOPs, open
GOPs with B-frames (H.264 and MPEG-2 program stream), Matroska/WebM with thinned, late or
no cues, MP4 with edit lists (a delayed start, a trimmed start), variable frame rate with
gaps, AVI and FLV; for several window/overlap/fps settings that are not multiples of each
other, with the container reused across windows in a shuffled order (as the helper process
does).

Generated frames show their own number (tests/video_fixtures.py), so each sampled image is
also checked to be that very frame; corpus frames are compared, in grey, with the oracle's
own decode of the frame at that time converted to the same size.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.video_fixtures import late_cues, read_stamp, thin_cues, write_stamped
from vlbeam.schemas.elements import SourceFile
from vlbeam.transforms.media.video_decode import (
    SamplingConfig,
    frame_size,
    open_container,
    probe,
    sample_window,
    target_times,
)
from vlbeam.transforms.media.work_units import VideoConfig, plan_windows

EPS = 1e-6
MAX_PIXELS = 128 * 96  # frame size for every setting: small, so the oracle can keep every frame

# (window_s, overlap_s, fps, max_frames): lengths, steps and sampling intervals that do not
# divide one another, so window starts and instants fall between keyframes and frames.
SETTINGS = [
    (7.0, 3.0, 2.0, 128),
    (60.0, 4.0, 2.0, 128),
    (9.3, 2.1, 0.7, 128),
    (5.0, 0.0, 3.0, 128),
    (13.0, 2.5, 2.5, 8),  # 33 instants thinned to 8
]
KEYFRAME_SETTINGS = [(7.0, 3.0, 2.0, 128), (20.0, 1.5, 0.45, 128)]


# ---------------------------------------------------------------- the oracle


@dataclass
class Truth:
    """Every frame of a video in the decoder's presentation order, from a plain decode."""

    times: list[float]  # seconds from the first frame presented
    keys: list[bool]
    stamps: list[int] = field(default_factory=list)  # generated files: the number shown
    greys: list[np.ndarray] = field(default_factory=list)  # corpus files: at the sampled size

    def at(self, t: float) -> list[int]:
        return [i for i, x in enumerate(self.times) if abs(x - t) <= EPS]


def decode_truth(path: Path, stamped: bool) -> Truth:
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        streams = container.streams.video
        stream = next(s for s in streams if not s.disposition & av.stream.Disposition.attached_pic)
        pts, truth = [], Truth([], [])
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                pts.append(frame.pts)
                truth.keys.append(bool(frame.key_frame))
                if stamped:
                    truth.stamps.append(read_stamp(frame.to_ndarray(format="rgb24")))
                else:  # converted as sampled frames are (before any rotation)
                    width, height = frame_size(frame.width, frame.height, MAX_PIXELS)
                    grey = frame.to_ndarray(width=width, height=height, format="gray")
                    truth.greys.append(grey.astype(np.float32))
        truth.times = [float((p - pts[0]) * stream.time_base) for p in pts]
    return truth


def first_at_or_after(times: list[float], instant: float) -> float | None:
    later = [t for t in times if t >= instant - EPS]
    return min(later) if later else None


def expected_times(truth: Truth, start: float, end: float, cfg: SamplingConfig) -> list[float]:
    """For each instant of [start, end), the first frame (keyframe in keyframe mode)
    presented at or after it, if inside the window; each frame once."""

    def pick(times: list[float], instants: list[float]) -> list[float]:
        out: list[float] = []
        for instant in instants:
            t = first_at_or_after(times, instant)
            if t is not None and t < end and (not out or t > out[-1] + EPS):
                out.append(t)
        return out

    instants = target_times(start, end, cfg)
    if cfg.mode == "keyframes":
        keys = pick([t for t, key in zip(truth.times, truth.keys, strict=True) if key], instants)
        if keys:
            return keys
        instants = instants[:1]  # no keyframe in the window: its first instant's frame
    return pick(truth.times, instants)


def stored_grey(jpeg: bytes, rotation: int) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg)).convert("L")
    if rotation:  # back to the stored orientation, as the oracle decoded it
        image = image.rotate(-rotation, expand=True)
    return np.asarray(image, np.float32)


def coverage_problems(
    path: Path, truth: Truth, settings, mode: str = "frames", seed: int = 0
) -> tuple[list[str], int]:
    """Samples every planned window (one container, shuffled order) for each setting and
    compares with the oracle. Returns (problems, instants checked)."""
    problems: list[str] = []
    checked = 0
    container = open_container(str(path))
    try:
        info = probe(container)
        if truth.times[-1] >= info.duration_s:
            problems.append(f"last frame {truth.times[-1]:.3f} s after the end {info.duration_s}")
        for window_s, overlap_s, fps, max_frames in settings:
            sampling = SamplingConfig(
                fps=fps, max_frames=max_frames, max_pixels=128 * 96, mode=mode
            )
            cfg = VideoConfig(window_s=window_s, overlap_s=overlap_s, sampling=sampling)
            source = SourceFile(str(path), "0" * 64, "video", 1)
            windows = plan_windows(source, info.duration_s, cfg)
            assert windows[0].start_s == 0
            random.Random(seed).shuffle(windows)
            for window in windows:
                frames, _ = sample_window(container, info, window.start_s, window.end_s, sampling)
                got = [f.time_s for f in frames]
                want = expected_times(truth, window.start_s, window.end_s, sampling)
                checked += len(target_times(window.start_s, window.end_s, sampling))
                where = f"{path.name} {mode} {window_s}/{overlap_s}/{fps} {window.describe()}"
                if len(got) != len(want) or any(
                    abs(a - b) > EPS for a, b in zip(got, want, strict=True)
                ):
                    problems.append(f"{where}: got {_fmt(got)}, want {_fmt(want)}")
                    continue
                for frame in frames:
                    same = truth.at(frame.time_s)
                    if truth.stamps:
                        shown = read_stamp(Image.open(io.BytesIO(frame.image)))
                        if shown not in {truth.stamps[i] for i in same}:
                            problems.append(f"{where}: frame at {frame.time_s} shows {shown}")
                    else:
                        ours = stored_grey(frame.image, info.rotation)
                        diff = min(float(np.abs(ours - truth.greys[i]).mean()) for i in same)
                        if diff > 4:  # JPEG q90 and RGB→grey rounding only
                            problems.append(
                                f"{where}: frame at {frame.time_s} differs ({diff:.1f})"
                            )
    finally:
        container.close()
    return problems, checked


def _fmt(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.3f}" for t in times[:6]) + (", ...]" if len(times) > 6 else "]")


# ---------------------------------------------------------------- generated cases


def every(duration_s: float, fps: float, offset_s: float = 0.0) -> list[float]:
    return [offset_s + i / fps for i in range(round(duration_s * fps))]


def vfr_with_gaps() -> list[float]:
    rng = random.Random(11)
    times, t = [], 0.0
    while t < 30:
        times.append(round(t, 3))
        t += rng.uniform(0.03, 0.4)
        if 6 < t < 6.4 or 17 < t < 17.4:
            t += 3.5  # a still: no frame for 3.5 s
    return times


X264 = "scenecut=0:keyint={g}:min-keyint={g}"
OPEN_GOP = ":bframes=3:open-gop=1"
VP9 = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}


def _mpegts_start_11_4(path: Path) -> None:
    write_stamped(path, every(40, 25, offset_s=11.4), fmt="mpegts", time_base=Fraction(1, 90000),
                  codec_options={"x264-params": X264.format(g=250) + ":bframes=2"})  # fmt: skip


def _mpegts_open_gop(path: Path) -> None:
    write_stamped(path, every(24, 25, offset_s=3.0), fmt="mpegts", time_base=Fraction(1, 90000),
                  codec_options={"x264-params": X264.format(g=75) + OPEN_GOP})  # fmt: skip


def _mpeg_ps_open_gop(path: Path) -> None:
    # MPEG-2, GOPs of 12 with 2 B-frames (open by default); the program stream stores a
    # time only every few packets, so the demuxer derives the rest.
    write_stamped(path, every(20, 25), codec="mpeg2video", fmt="vob", time_base=Fraction(1, 25),
                  gop=12, codec_options={"bf": "2"})  # fmt: skip


def _mkv_open_gop(path: Path) -> None:
    write_stamped(path, every(24, 25), fmt="matroska",
                  codec_options={"x264-params": X264.format(g=50) + OPEN_GOP})  # fmt: skip


def _webm(path: Path) -> None:
    write_stamped(path, every(30, 15), codec="libvpx-vp9", fmt="webm",
                  codec_options={"g": "60", "keyint_min": "60", **VP9})  # fmt: skip


def _webm_sparse_cues(path: Path) -> None:
    _webm(path)
    assert thin_cues(path, keep_every=3) == 3


def _webm_late_cues(path: Path) -> None:
    _webm(path)
    assert late_cues(path) == 7


def _mkv_no_cues(path: Path) -> None:
    write_stamped(path, every(30, 15), fmt="matroska", container_options={"live": "1"},
                  codec_options={"x264-params": X264.format(g=60)})  # fmt: skip


def _mp4_edit_list(path: Path) -> None:
    # frames from 1.5 s (an empty edit) and B-frames (an edit that skips their delay)
    write_stamped(path, every(20, 25, offset_s=1.5),
                  codec_options={"x264-params": X264.format(g=50) + ":bframes=3"})  # fmt: skip


def _mp4_trimmed(path: Path) -> None:
    # as an editor trims a clip: the edit list hides the first second of the media
    _mp4_edit_list(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"elst") + 12 + 12  # second entry: (duration, media time, rate)
    duration = int.from_bytes(data[at : at + 4], "big")
    media_time = int.from_bytes(data[at + 4 : at + 8], "big", signed=True)
    data[at : at + 4] = (duration - 1000).to_bytes(4, "big")  # movie time scale: 1/1000
    data[at + 4 : at + 8] = (media_time + 16000).to_bytes(4, "big", signed=True)  # 1/16000
    path.write_bytes(bytes(data))


def _mp4_vfr_gaps(path: Path) -> None:
    write_stamped(path, vfr_with_gaps(), codec_options={"x264-params": X264.format(g=40)})


def _avi_mpeg4_bframes(path: Path) -> None:
    write_stamped(path, every(20, 25), codec="mpeg4", fmt="avi", time_base=Fraction(1, 25),
                  gop=50, codec_options={"bf": "2"})  # fmt: skip


def _flv(path: Path) -> None:
    write_stamped(path, every(20, 25), fmt="flv",
                  codec_options={"x264-params": X264.format(g=75) + ":bframes=2"})  # fmt: skip


CASES = {
    "mpegts_start_11.4s_gop10s.ts": _mpegts_start_11_4,
    "mpegts_open_gop_bframes.ts": _mpegts_open_gop,
    "mpeg_ps_open_gop.mpg": _mpeg_ps_open_gop,
    "mkv_open_gop_bframes.mkv": _mkv_open_gop,
    "webm_vp9_gop4s.webm": _webm,
    "webm_sparse_cues.webm": _webm_sparse_cues,
    "webm_late_cues.webm": _webm_late_cues,
    "mkv_no_cues.mkv": _mkv_no_cues,
    "mp4_edit_list.mp4": _mp4_edit_list,
    "mp4_trimmed_edit_list.mp4": _mp4_trimmed,
    "mp4_vfr_gaps.mp4": _mp4_vfr_gaps,
    "avi_mpeg4_bframes.avi": _avi_mpeg4_bframes,
    "flv_h264.flv": _flv,
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[Path, Truth]]:
    folder = tmp_path_factory.mktemp("coverage")
    out = {}
    for name, make in CASES.items():
        make(folder / name)
        out[name] = (folder / name, decode_truth(folder / name, stamped=True))
    return out


def test_generated_cases_are_what_they_claim(generated):
    """The files really have the properties the coverage cases rely on."""
    import av

    for name, (_, truth) in generated.items():
        assert truth.stamps == sorted(truth.stamps), name  # every frame decodes, in order
        assert truth.times[0] == 0
    path, truth = generated["mpegts_start_11.4s_gop10s.ts"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.start_time * stream.time_base) == pytest.approx(11.4)
    assert [t for t, key in zip(truth.times, truth.keys, strict=True) if key] == [0, 10, 20, 30]
    assert generated["mp4_trimmed_edit_list.mp4"][1].stamps[0] == 25  # first second hidden
    gaps = np.diff(generated["mp4_vfr_gaps.mp4"][1].times)
    assert gaps.max() > 3.5
    assert b"\x1c\x53\xbb\x6b" not in generated["mkv_no_cues.mkv"][0].read_bytes()  # no Cues
    assert generated["mp4_edit_list.mp4"][0].read_bytes().count(b"elst") == 1
    # open GOPs: frames after a (non-first) keyframe in decode order presented before it
    for name in ("mkv_open_gop_bframes.mkv", "mpegts_open_gop_bframes.ts", "mpeg_ps_open_gop.mpg"):
        with av.open(str(generated[name][0])) as container:
            packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        leading = [
            i
            for i, p in enumerate(packets[:-1])
            if p.is_keyframe and i > 0 and packets[i + 1].pts < p.pts
        ]
        assert len(leading) >= 3, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_instant_gets_the_first_frame_at_or_after_it(generated, name):
    path, truth = generated[name]
    problems, checked = coverage_problems(path, truth, SETTINGS)
    assert checked > 100
    assert problems == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_keyframe_mode_gets_the_first_keyframe_at_or_after_each_instant(generated, name):
    path, truth = generated[name]
    problems, _ = coverage_problems(path, truth, KEYFRAME_SETTINGS, mode="keyframes", seed=1)
    assert problems == []


def test_the_issue_cases_fail_without_a_checked_seek(generated, monkeypatch):
    """The oracle catches the failures reported: one seek per window to the keyframe before
    it, trusted wherever it landed (the earlier algorithm), misses instants on MPEG-TS and
    on WebM whose cues point late, and gets MPEG-PS times wrong after a seek."""
    import av

    from vlbeam.transforms.media import video_decode

    def trusting_sample(container, stream, info, targets, window, cfg, keyframes):
        origin = video_decode._origin_pts(info, stream)
        try:
            container.seek(origin + int(targets[0] / stream.time_base), stream=stream)
        except av.error.FFmpegError:
            container.seek(0)
        packets = container.demux(stream)
        return video_decode._decode(packets, stream, info, targets, window, cfg, True)

    monkeypatch.setattr(video_decode, "_sample", trusting_sample)
    for name in ("mpegts_start_11.4s_gop10s.ts", "webm_late_cues.webm", "mpeg_ps_open_gop.mpg"):
        path, truth = generated[name]
        problems, _ = coverage_problems(path, truth, SETTINGS)
        assert len(problems) >= 3, name


# ---------------------------------------------------------------- the corpus


def corpus_videos(corpus: Path) -> list[Path]:
    """Every good video of the corpus that has a picture (MANIFEST: a video codec)."""
    with open(corpus / "MANIFEST.tsv", newline="") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    return [
        corpus / row["path"]
        for row in rows
        if row["category"] == "video-good" and row["video_codec"] not in ("", "(none)")
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_good_corpus_video_is_covered_frame_exactly(corpus):
    videos = corpus_videos(corpus)
    assert len(videos) >= 11
    problems, checked = [], 0
    for path in videos:
        truth = decode_truth(path, stamped=False)
        found, count = coverage_problems(path, truth, SETTINGS)
        keys, _ = coverage_problems(path, truth, KEYFRAME_SETTINGS[:1], mode="keyframes")
        problems += found + keys
        checked += count
    assert checked > 1000
    assert problems == []
