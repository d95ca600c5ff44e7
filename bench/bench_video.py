"""Benchmark vlbeam's video frame sampling: speed against a decode floor, and peak memory.

1. Speed. H.264 test videos (720p and 1080p MP4, 30 fps, keyframe every 250 frames =
   8.3 s, so window starts don't fall on keyframes; and a 720p MPEG-TS with keyframes
   10 s apart whose stream starts at 11.4 s, where a seek lands after the keyframe it
   asked for and must be checked and corrected) are made with the ffmpeg CLI.
   In each round, on each video, it times:
   - the floor: `ffmpeg -i X -an -f null -` (decode every frame, both cores; the
     test videos have no audio, `-an` only keeps the command honest);
   - PyAV decoding every frame with frame threading (context: the Python binding's
     own cost, no conversion);
   - vlbeam's sampling at 2 fps and 0.5 fps, the real code: windows planned by
     `plan_windows(VideoConfig(sampling=SamplingConfig(fps=...)))` (60 s windows,
     4 s overlap), then `open_container` / `probe` / `sample_window` per window,
     both in this process and through `HelperProcess` (the helper process the
     pipeline uses: `probe_video` then `sample_video` per window; its start-up and
     imports are included in its time and also shown alone);
   - with `--baseline REV`, the same in-process sampling with `video_decode.py` as it
     was at git revision REV (loaded from `git show`), interleaved in the same rounds:
     the before/after comparison on the same files under the same load;
   - keyframe mode (`SamplingConfig(mode="keyframes")`, fps 2 as the upper bound), in
     process: only keyframes are decoded.
   Ratios (vlbeam wall / floor wall, same round; lower is better, < 1 is faster than
   decoding every frame) are the result; absolute times are context. CPU ratios
   (user+sys of every process involved) are printed too: they move less than wall
   time when something else shares the machine. `frames/targets` compares the frames
   returned with the sampling instants planned (`target_times`); one short at the
   end of a video is expected when the last instant falls inside the last frame's
   duration (no frame is presented at or after it).
2. Memory. A short and a long 320x240 30 fps video (5 and 60 minutes by default)
   go through the job's video planning (`PlanWork`) and decoding (`WindowSampler`) on
   `FnApiRunner` in a fresh
   Python process each; frames are counted, not kept. The RSS of the whole process
   tree (the Beam process plus the HelperProcess helper) is sampled with psutil every
   0.1 s; each process's own peak (VmHWM) is reported too. Claim under test: peak
   memory for the long video is about the same as for the short one.

Test videos are a short clip (500 frames) encoded once per size and repeated with
the concat demuxer (`-c copy`): making a 60-minute file then takes about a second.
The content repeats, which makes no difference to decoding cost.

    .venv/bin/python bench/bench_video.py            # about 8 minutes on 2 cores
    .venv/bin/python bench/bench_video.py --baseline 9e5fdfe   # and the code before #13
    .venv/bin/python bench/bench_video.py --quick    # about 1-2 minutes
    .venv/bin/python bench/bench_video.py --out /tmp/v.json --video-dir /tmp/vids

Writes JSON to bench/results/bench_video.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "bench_video.json"

CLIP_FRAMES = 500  # one base clip: 16.67 s at 30 fps, two GOPs
GOP = 250  # 8.33 s at 30 fps
RATE = 30


@dataclass(frozen=True)
class SpeedVideo:
    label: str
    width: int
    height: int
    clips: int  # duration = clips * CLIP_FRAMES / RATE
    mpegts: bool = False  # MPEG-TS, keyframes 10 s apart, stream starting at 11.4 s


@dataclass(frozen=True)
class Mode:
    speed_videos: tuple[SpeedVideo, ...]
    rounds: int
    memory_clips: tuple[int, int]  # short, long (in base clips)
    memory_size: tuple[int, int]
    pyav_reference: bool  # also time PyAV decoding every frame


MODES = {
    # 720p 150 s (3 windows), 1080p 83 s (2 windows), 720p TS 100 s (2 windows);
    # memory: 5 min and 60 min.
    "default": Mode(
        (
            SpeedVideo("720p", 1280, 720, 9),
            SpeedVideo("1080p", 1920, 1080, 5),
            SpeedVideo("720p TS", 1280, 720, 5, mpegts=True),
        ),
        rounds=2,
        memory_clips=(18, 216),
        memory_size=(320, 240),
        pyav_reference=True,
    ),
    # 720p 67 s (2 windows), 1080p 33 s (1 window), 720p TS 60 s (1 window);
    # memory: 1 min and 10 min.
    "quick": Mode(
        (
            SpeedVideo("720p", 1280, 720, 4),
            SpeedVideo("1080p", 1920, 1080, 2),
            SpeedVideo("720p TS", 1280, 720, 3, mpegts=True),
        ),
        rounds=1,
        memory_clips=(4, 36),
        memory_size=(320, 240),
        pyav_reference=False,
    ),
}


# ---------------------------------------------------------------- test videos


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


def make_video(folder: Path, width: int, height: int, clips: int, preset: str) -> Path:
    """`clips` copies of a 500-frame testsrc2 clip (H.264, no audio), made once."""
    base = folder / f"base_{width}x{height}_{preset}.mp4"
    if not base.exists():
        tmp = base.with_suffix(".part.mp4")
        _ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={RATE}",
            "-frames:v", CLIP_FRAMES, "-c:v", "libx264", "-preset", preset,
            "-g", GOP, "-keyint_min", GOP, "-sc_threshold", 0, "-pix_fmt", "yuv420p", tmp,
        )  # fmt: skip
        tmp.rename(base)
    out = folder / f"test_{width}x{height}_{preset}_{clips}x{CLIP_FRAMES}.mp4"
    if not out.exists():
        listing = out.with_suffix(".txt")
        listing.write_text(f"file '{base.name}'\n" * clips)
        tmp = out.with_suffix(".part.mp4")
        _ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", tmp)
        tmp.rename(out)
        listing.unlink()
    return out


TS_GOP = 300  # 10 s at 30 fps
TS_CLIP_FRAMES = 600  # two GOPs
TS_OFFSET_S = 10.0  # + the muxer's own 1.4 s: the stream starts at 11.4 s


def make_ts_video(folder: Path, width: int, height: int, clips: int, preset: str) -> Path:
    """MPEG-TS, keyframes 10 s apart, starting at 11.4 s: `clips` copies of 20 s."""
    base = folder / f"base_{width}x{height}_{preset}_gop{TS_GOP}.mp4"
    if not base.exists():
        tmp = base.with_suffix(".part.mp4")
        _ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={RATE}",
            "-frames:v", TS_CLIP_FRAMES, "-c:v", "libx264", "-preset", preset,
            "-g", TS_GOP, "-keyint_min", TS_GOP, "-sc_threshold", 0, "-pix_fmt", "yuv420p", tmp,
        )  # fmt: skip
        tmp.rename(base)
    out = folder / f"test_{width}x{height}_{preset}_{clips}x{TS_CLIP_FRAMES}_gop{TS_GOP}.ts"
    if not out.exists():
        listing = out.with_suffix(".txt")
        listing.write_text(f"file '{base.name}'\n" * clips)
        tmp = out.with_suffix(".part.ts")
        _ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy",
                "-output_ts_offset", TS_OFFSET_S, "-f", "mpegts", tmp)  # fmt: skip
        tmp.rename(out)
        listing.unlink()
    return out


# ---------------------------------------------------------------- timing


def _cpu_s() -> float:
    """User+sys seconds of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    cpu0, t0 = _cpu_s(), time.perf_counter()
    result = fn()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, **result}


def run_floor(path: Path) -> dict[str, Any]:
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-an", "-f", "null", "-"]
    subprocess.run(cmd, check=True)
    return {}


def run_pyav_all(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = sum(1 for _ in container.decode(stream))
    return {"decoded": decoded}


def _windows(path: Path, duration_s: float, fps: float, mode: str = "frames"):
    from vlbeam.schemas.elements import SourceFile
    from vlbeam.transforms.media.video_decode import SamplingConfig
    from vlbeam.transforms.media.work_units import VideoConfig, plan_windows

    cfg = VideoConfig(sampling=SamplingConfig(fps=fps, mode=mode))
    source = SourceFile(uri=str(path), doc_id=None, kind="video", size_bytes=path.stat().st_size)
    return cfg, plan_windows(source, duration_s, cfg)


def _expected_frames(windows, sampling) -> int:
    from vlbeam.transforms.media.video_decode import target_times

    return sum(len(target_times(w.start_s, w.end_s, sampling)) for w in windows)


BASELINE: Any = None  # video_decode.py at --baseline REV, loaded by load_baseline


def load_baseline(rev: str) -> Any:
    """`transforms/media/video_decode.py` as it was at git revision `rev`, as a module."""
    import importlib.util

    repo = BENCH_DIR.parent
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"{rev}:transforms/media/video_decode.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="bench_video_base_")) / "video_decode_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("video_decode_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_in_process(path: Path, fps: float, decode: Any = None, mode: str = "frames") -> dict:
    """Every planned window sampled with `decode` (default: the current video_decode)."""
    if decode is None:
        from vlbeam.transforms.media import video_decode as decode

    container = decode.open_container(str(path))
    try:
        info = decode.probe(container)
        cfg, windows = _windows(path, info.duration_s, fps, mode)
        sampling = decode.SamplingConfig(fps=fps, **({"mode": mode} if mode != "frames" else {}))
        frames = jpeg_bytes = errors = 0
        got = []
        for w in windows:
            got, errs = decode.sample_window(container, info, w.start_s, w.end_s, sampling)
            frames += len(got)
            jpeg_bytes += sum(len(f.image) for f in got)
            errors += errs
    finally:
        container.close()
    return {
        "frames": frames,
        "expected_frames": _expected_frames(windows, cfg.sampling),
        "windows": len(windows),
        "decode_errors": errors,
        "jpeg_bytes": jpeg_bytes,
        "frame_size": [got[0].width, got[0].height] if got else None,
    }


def run_baseline(path: Path, fps: float) -> dict[str, Any]:
    return run_in_process(path, fps, decode=BASELINE)


def run_keyframes(path: Path, fps: float) -> dict[str, Any]:
    return run_in_process(path, fps, mode="keyframes")


def run_worker(path: Path, fps: float) -> dict[str, Any]:
    from vlbeam.transforms.media.helper_process import HelperProcess
    from vlbeam.transforms.media.work_units import VideoConfig

    t0 = time.perf_counter()
    timeout = VideoConfig().timeout_s
    worker = HelperProcess(VideoConfig().max_memory_mb)
    try:
        info = worker.probe_video(str(path), timeout)
        startup = time.perf_counter() - t0
        cfg, windows = _windows(path, info.duration_s, fps)
        frames = errors = 0
        for w in windows:
            got, errs = worker.sample_video(str(path), w.start_s, w.end_s, cfg.sampling, timeout)
            frames += len(got)
            errors += errs
    finally:
        worker.close()  # kills and reaps the helper, so its CPU time is counted
    return {
        "frames": frames,
        "expected_frames": _expected_frames(windows, cfg.sampling),
        "windows": len(windows),
        "decode_errors": errors,
        "startup_probe_s": startup,
    }


def duration_of(path: Path) -> float:
    from vlbeam.transforms.media.video_decode import open_container, probe

    container = open_container(str(path))
    try:
        return probe(container).duration_s
    finally:
        container.close()


CASES: list[tuple[str, float | None, Callable[[Path, float], dict[str, Any]] | None]] = [
    ("floor", None, None),
    ("pyav_all", None, None),
    ("base_2fps", 2.0, run_baseline),
    ("inproc_2fps", 2.0, run_in_process),
    ("worker_2fps", 2.0, run_worker),
    ("base_0.5fps", 0.5, run_baseline),
    ("inproc_0.5fps", 0.5, run_in_process),
    ("worker_0.5fps", 0.5, run_worker),
    ("keyframes", 2.0, run_keyframes),
]


def bench_speed(
    path: Path, rounds: int, pyav_reference: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    cases = [
        c
        for c in CASES
        if (pyav_reference or c[0] != "pyav_all")
        and (BASELINE is not None or not c[0].startswith("base_"))
    ]
    per_round: list[dict[str, dict[str, Any]]] = []
    for r in range(rounds):
        order = cases if r % 2 == 0 else cases[::-1]  # alternate to cancel drift
        results: dict[str, dict[str, Any]] = {}
        for name, fps, fn in order:
            if name == "floor":
                results[name] = timed(lambda: run_floor(path))
            elif name == "pyav_all":
                results[name] = timed(lambda: run_pyav_all(path))
            else:
                results[name] = timed(lambda fn=fn, fps=fps: fn(path, fps))
            log(f"  round {r + 1} {name}: {results[name]['wall_s']:.2f} s")
        per_round.append(results)
    summary: dict[str, dict[str, Any]] = {}
    for name, _, _ in cases:
        walls = [res[name]["wall_s"] for res in per_round]
        cpus = [res[name]["cpu_s"] for res in per_round]
        ratios = [res[name]["wall_s"] / res["floor"]["wall_s"] for res in per_round]
        cpu_ratios = [res[name]["cpu_s"] / res["floor"]["cpu_s"] for res in per_round]
        summary[name] = {
            "wall_s": statistics.median(walls),
            "cpu_s": statistics.median(cpus),
            "ratio_to_floor": statistics.median(ratios),
            "ratio_to_floor_rounds": ratios,
            "cpu_ratio_to_floor": statistics.median(cpu_ratios),
        }
        last = per_round[-1][name]
        for key in ("frames", "expected_frames", "windows", "decode_errors", "decoded"):
            if key in last:
                summary[name][key] = last[key]
        if "startup_probe_s" in last:
            summary[name]["startup_probe_s"] = statistics.median(
                res[name]["startup_probe_s"] for res in per_round
            )
    return {"rounds": per_round, "summary": summary}


# ---------------------------------------------------------------- memory


def _hwm_kb(pid: int | str = "self") -> int:
    """Peak RSS (VmHWM, kB) of a live process's current address space (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def memory_child(path: str) -> None:
    """Runs the job's video planning (PlanWork) and window decoding (WindowSampler, as the
    inference stage drives it) over one video on FnApiRunner; prints RESULT json lines."""
    import apache_beam as beam

    from vlbeam.schemas.config import RenderConfig
    from vlbeam.schemas.elements import WindowFrames
    from vlbeam.transforms.ingest import identify_file
    from vlbeam.transforms.media.work_units import VideoConfig
    from vlbeam.transforms.plan import PlanWork
    from vlbeam.transforms.video_frames import WindowSampler

    class DecodeWindows(beam.DoFn):
        def setup(self):
            from vlbeam.transforms.media.helper_process import HelperProcess

            self._helper = HelperProcess(VideoConfig().max_memory_mb)
            self._sampler = WindowSampler(VideoConfig())

        def teardown(self):
            self._helper.close()

        def process(self, window):
            out = self._sampler.frames(self._helper, window)
            if isinstance(out, WindowFrames):
                yield len(out.frames)
            else:
                yield beam.pvalue.TaggedOutput("failures", out)

    source, _ = identify_file(path)
    t0 = time.perf_counter()
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        planned = pipeline | beam.Create([source]) | PlanWork(RenderConfig(), VideoConfig())
        decoded = planned["units"] | beam.ParDo(DecodeWindows()).with_outputs(
            "failures", main="frames"
        )
        frames = decoded.frames | "SumFrames" >> beam.CombineGlobally(sum)
        windows = decoded.frames | "CountWindows" >> beam.combiners.Count.Globally()
        failures = (planned["failures"], decoded.failures) | beam.Flatten()
        failures = failures | "CountFailures" >> beam.combiners.Count.Globally()
        for tag, pcoll in (("frames", frames), ("windows", windows), ("failures", failures)):
            _ = pcoll | f"Emit{tag}" >> beam.Map(
                lambda n, tag=tag: print(f"RESULT {json.dumps({tag: n})}", flush=True)
            )
    report = {"pipeline_s": time.perf_counter() - t0, "beam_hwm_kb": _hwm_kb()}
    print(f"RESULT {json.dumps(report)}", flush=True)


def measure_memory(path: Path, interval_s: float = 0.1) -> dict[str, Any]:
    """Runs memory_child in a fresh process; samples the process tree's RSS.

    Per-process peaks come from VmHWM, not ru_maxrss: a child started by
    fork/vfork+exec inherits its parent's ru_maxrss on Linux, so ru_maxrss of the
    Beam process would include this (Beam-importing) parent, and the helper's would
    include the Beam process.
    """
    import psutil

    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(path)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_total, samples = 0, 0
    helper_hwm_kb: dict[int, int] = {}  # planning and decoding each start a helper
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0
        for p in tree:
            try:
                total += p.memory_info().rss
                if p.pid != root.pid and "helper_process" in " ".join(p.cmdline()):
                    helper_hwm_kb[p.pid] = _hwm_kb(p.pid)
            except (psutil.Error, OSError):
                continue
        peak_total = max(peak_total, total)
        samples += 1
        time.sleep(interval_s)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed on {path} (exit {proc.returncode})")
    report: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            report.update(json.loads(line[7:]))
    return {
        "wall_s": wall,
        "samples": samples,
        "peak_tree_rss_mb": peak_total / 2**20,
        "beam_process_hwm_mb": report.get("beam_hwm_kb", 0) / 1024,
        "helper_hwm_mb": max(helper_hwm_kb.values(), default=0) / 1024,
        "helpers": len(helper_hwm_kb),
        "helpers_hwm_sum_mb": sum(helper_hwm_kb.values()) / 1024,
        **{k: report.get(k) for k in ("frames", "windows", "failures", "pipeline_s")},
    }


# ---------------------------------------------------------------- report


def _speed_table(videos: list[dict[str, Any]], rounds: int) -> list[str]:
    labels = {
        "floor": "floor: ffmpeg -an -f null",
        "pyav_all": "PyAV, every frame",
        "base_2fps": "before: 2 fps, in-process",
        "inproc_2fps": "vlbeam 2 fps, in-process",
        "worker_2fps": "vlbeam 2 fps, HelperProcess",
        "base_0.5fps": "before: 0.5 fps, in-process",
        "inproc_0.5fps": "vlbeam 0.5 fps, in-process",
        "worker_0.5fps": "vlbeam 0.5 fps, HelperProcess",
        "keyframes": "keyframes (<= 2 fps), in-proc",
    }
    lines = [
        f"Speed (median of {rounds} round(s); ratio = wall / floor wall in the same round, "
        "lower is better)",
        f"{'video':<14} {'what':<30} {'wall s':>7} {'x realtime':>10} {'ratio':>6} "
        f"{'cpu ratio':>9} {'frames/targets':>14}",
    ]
    for video in videos:
        name = f"{video['label']} {video['duration_s']:.0f} s"
        for case, row in video["summary"].items():
            if "frames" in row:
                frames = f"{row['frames']}/{row['expected_frames']}"
            else:
                frames = str(row.get("decoded", "all"))
            lines.append(
                f"{name:<14} {labels[case]:<30} {row['wall_s']:7.2f} "
                f"{video['duration_s'] / row['wall_s']:10.1f} {row['ratio_to_floor']:6.2f} "
                f"{row['cpu_ratio_to_floor']:9.2f} {frames:>14}"
            )
            name = ""
        startup = video["summary"]["worker_2fps"]["startup_probe_s"]
        lines.append(f"{'':<14} (HelperProcess start-up + probe: {startup:.2f} s of its wall)")
    return lines


def _compare_table(videos: list[dict[str, Any]], baseline: str) -> list[str]:
    """Before (--baseline) / after ratios to the floor, in-process, same rounds."""
    lines = [
        f"Before ({baseline}) / after, in-process, ratio to the floor (wall; cpu), same rounds",
        f"{'video':<14} {'fps':>4} {'before':>13} {'after':>13} {'change':>13} "
        f"{'frames before/after/targets':>28}",
    ]
    for video in videos:
        summary = video["summary"]
        for fps in ("2", "0.5"):
            before, after = summary[f"base_{fps}fps"], summary[f"inproc_{fps}fps"]
            change = [
                100 * (after[k] / before[k] - 1) for k in ("ratio_to_floor", "cpu_ratio_to_floor")
            ]
            lines.append(
                f"{video['label']:<14} {fps:>4} "
                f"{before['ratio_to_floor']:6.2f};{before['cpu_ratio_to_floor']:5.2f} "
                f"{after['ratio_to_floor']:6.2f};{after['cpu_ratio_to_floor']:5.2f} "
                f"{change[0]:+5.0f}%;{change[1]:+5.0f}% "
                f"{before['frames']:>10}/{after['frames']}/{after['expected_frames']}"
            )
        keys = summary["keyframes"]
        lines.append(
            f"{video['label']:<14} keyframe mode: ratio {keys['ratio_to_floor']:.3f} wall, "
            f"{keys['cpu_ratio_to_floor']:.3f} cpu ({keys['frames']} keyframes); "
            f"{summary['inproc_2fps']['cpu_s'] / keys['cpu_s']:.0f}x less cpu than 2 fps frames"
        )
    return lines


def _memory_table(memory: dict[str, Any]) -> list[str]:
    short, long = memory["short"], memory["long"]
    w, h = memory["size"]
    lines = [
        f"Memory (video planning + decoding on FnApiRunner, VideoConfig defaults (2 fps), "
        f"{w}x{h} {RATE} fps)",
        f"{'video':<8} {'wall s':>7} {'windows':>7} {'frames':>7} {'failures':>8} "
        f"{'tree peak MB':>12} {'beam proc MB':>12} {'helper MB':>9}",
    ]
    for key, row in (("short", short), ("long", long)):
        lines.append(
            f"{memory[key + '_label']:<8} {row['wall_s']:7.1f} {row['windows']!s:>7} "
            f"{row['frames']!s:>7} {row['failures']!s:>8} {row['peak_tree_rss_mb']:12.0f} "
            f"{row['beam_process_hwm_mb']:12.0f} {row['helper_hwm_mb']:9.0f}"
        )
    lines += [
        f"ratio long/short: tree peak {memory['ratio_tree_peak']:.2f}, "
        f"Beam process peak {memory['ratio_beam_peak']:.2f}, "
        f"helper peak {memory['ratio_helper_peak']:.2f}",
        "(tree peak: sum over the process tree, sampled every 0.1 s; Beam process and "
        "helper: their own peak RSS (VmHWM), the larger of the two helpers)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 1 minute instead of ~5")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--rounds", type=int, help="speed rounds (default 2, quick 1)")
    parser.add_argument(
        "--video-dir", type=Path, help="keep/reuse the test videos here (default: temp dir)"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--baseline", metavar="REV", help="also time video_decode.py as of this git revision"
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("bench_video.py needs the ffmpeg CLI on PATH")

    mode_name = "quick" if args.quick else "default"
    mode = MODES[mode_name]
    rounds = args.rounds or mode.rounds
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    # Import Beam, PyAV and vlbeam before any timing.
    import av
    import psutil  # noqa: F401  (fail early when missing)

    import vlbeam.transforms.video_frames  # noqa: F401

    global BASELINE
    if args.baseline:
        BASELINE = load_baseline(args.baseline)

    tmp = None
    if args.video_dir:
        folder = args.video_dir
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_video_")
        folder = Path(tmp.name)
    load_before = os.getloadavg()
    try:
        gen_t0 = time.perf_counter()
        speed_paths = [
            (v, (make_ts_video if v.mpegts else make_video)(
                folder, v.width, v.height, v.clips, "veryfast"))
            for v in mode.speed_videos
        ]  # fmt: skip
        mw, mh = mode.memory_size
        memory_paths = [make_video(folder, mw, mh, c, "veryfast") for c in mode.memory_clips]
        generate_s = time.perf_counter() - gen_t0
        log(f"test videos ready in {generate_s:.1f} s")

        speed = []
        for video, path in speed_paths:
            duration = duration_of(path)
            log(f"speed: {video.label} {duration:.0f} s")
            result = bench_speed(path, rounds, mode.pyav_reference, log)
            speed.append({"label": video.label, "duration_s": duration, "path": path.name,
                          "size_bytes": path.stat().st_size, **result})  # fmt: skip

        memory: dict[str, Any] | None = None
        if not args.skip_memory:
            memory = {"size": [mw, mh]}
            for key, path in zip(("short", "long"), memory_paths, strict=True):
                duration = duration_of(path)
                memory[key + "_label"] = f"{duration / 60:.0f} min"
                log(f"memory: {duration / 60:.0f} min")
                memory[key] = {"duration_s": duration, **measure_memory(path)}
            short, long = memory["short"], memory["long"]
            memory["ratio_tree_peak"] = long["peak_tree_rss_mb"] / short["peak_tree_rss_mb"]
            memory["ratio_beam_peak"] = long["beam_process_hwm_mb"] / short["beam_process_hwm_mb"]
            memory["ratio_helper_peak"] = long["helper_hwm_mb"] / short["helper_hwm_mb"]
    finally:
        if tmp is not None:
            tmp.cleanup()

    lines = _speed_table(speed, rounds)
    if BASELINE is not None:
        lines += ["", *_compare_table(speed, args.baseline)]
    if memory is not None:
        lines += ["", *_memory_table(memory)]
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()
    lines += [
        "",
        f"mode {mode_name}, {os.cpu_count()} CPUs, load average before "
        f"{load_before[0]:.2f} / after {load_after[0]:.2f}, "
        f"test videos made in {generate_s:.1f} s, total {total_s:.0f} s",
    ]
    if max(load_before[0], load_after[0]) > (os.cpu_count() or 1):
        lines.append(
            "load average above the CPU count: something else shared the machine; wall "
            "ratios are unreliable, read the cpu ratios (or rerun on a quiet machine)"
        )
    print("\n".join(lines))

    import apache_beam

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_video",
        "mode": mode_name,
        "rounds": rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "versions": {
            "av": av.__version__,
            "apache_beam": apache_beam.__version__,
            "ffmpeg": subprocess.run(
                ["ffmpeg", "-version"], capture_output=True, text=True
            ).stdout.split("\n")[0],
        },
        "videos": {
            "clip_frames": CLIP_FRAMES,
            "gop": GOP,
            "rate": RATE,
            "preset": "veryfast",
            "ts_gop": TS_GOP,
            "ts_clip_frames": TS_CLIP_FRAMES,
        },
        "baseline": args.baseline,
        "generate_s": generate_s,
        "speed": speed,
        "memory": memory,
        "total_s": total_s,
        "table": lines,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
