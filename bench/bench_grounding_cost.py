"""Benchmark coarse-to-fine grounding against dense grounding on an hour of video.

Two generated videos, 60 minutes each (`--duration-s`), 160x90 at 2 frames per second
(H.264, a keyframe every 10 s): one with six short events, a red or a blue square shown for
3 to 20 s at known times (one at the very start, one across the boundary of two coarse
windows, one until the video's end), and one where nothing is ever shown. Events start and
end on whole half-seconds, the dense sampling grid at --fps 2, so a dense pass can resolve
them exactly and the IoU measures the pipeline, not the sampling grid.

Each video goes through `vlbeam run` (a subprocess: the real CLI, end to end) with both
strategies, against a local OpenAI-compatible server whose model double really reads the
frames it is sent (`tests/frame_reader.py`): it decodes every image of a request, looks for
the colour each numbered query of the prompt names, and answers JSON spans from the frames
where it sees it and the `<t seconds>` times sent before them. Two queries ("a red square",
"a blue square"). Coarse-to-fine runs with 300 s coarse windows at 1/3 fps (one frame every
3 s: no event of 3 s or more falls between two coarse frames) and a 3 s margin.

It prints, per run: frames sent, model calls, visual tokens (Qwen3-VL's count for what was
sent: 32 px per token side, two frames per temporal patch), wall time, frames per pass; then
per event the span found by each strategy, its IoU with the truth, and whether coarse-to-fine
found what dense found within one frame step; then the checks of issue #24's "done when".
Wall times are context only (a shared 2-core machine); frames, calls and tokens are exact.

    ./py bench/bench_grounding_cost.py                    # about 3 minutes on 2 cores
    ./py bench/bench_grounding_cost.py --duration-s 900   # a quick 15-minute version
    ./py bench/bench_grounding_cost.py --out /tmp/g.json --workdir /tmp/g

Writes JSON to bench/results/bench_grounding_cost.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fake_api_server import FakeApiServer  # noqa: E402
from tests.frame_reader import Event, FrameReader, iou, write_event_video  # noqa: E402

QUERIES = ("a red square", "a blue square")
QUERY_OF = {"red": QUERIES[0], "blue": QUERIES[1]}
FPS = 2.0
STEP_S = 1 / FPS
EVENT_COLUMNS = ("query", "start_s", "end_s", "window_indexes", "coarse_window_indexes")
COARSE = {
    "--coarse-window-seconds": "300",
    "--coarse-fps": repr(1 / 3),
    "--refine-margin-s": "3",
}


def events_for(duration_s: float) -> list[Event]:
    """Six events at fixed places, scaled into shorter videos (--duration-s)."""
    d = duration_s
    spots = [
        ("red", 1.0, 3.0, 10, 10),  # at the start: the margin is clamped at 0 s
        ("blue", 294.0, 8.0, 120, 50),  # across the coarse windows 0-300 s and 296-596 s
        ("red", d * 0.28 - 7.5, 3.0, 60, 30),
        ("blue", d * 0.51 + 2.0, 20.0, 30, 60),
        ("red", d * 0.69 + 16.5, 12.5, 90, 20),
        ("blue", d - 10.0, 10.0, 70, 40),  # until the video's end
    ]
    return [
        Event(colour, round(start * 2) / 2, round(start * 2) / 2 + length, x=x, y=y)
        for colour, start, length, x, y in spots
    ]


def run_vlbeam(video: Path, out: Path, strategy: str, reader: FrameReader) -> dict:
    argv = [sys.executable, "-m", "vlbeam.pipeline.cli", "run", f"--input={video}",
            f"--output={out}", "--tasks=grounding", f"--fps={FPS:g}",
            *(f"--query={q}" for q in QUERIES), f"--grounding-strategy={strategy}",
            "--backend=openai", "--provider=openai", "--api-model=frame-reader",
            "--no-preflight", "--api-key-env=", "--max-concurrency=8"]  # fmt: skip
    if strategy == "coarse-to-fine":
        argv += [f"{k}={v}" for k, v in COARSE.items()]
    with FakeApiServer(reader) as server:
        argv.append(f"--base-url={server.base_url}")
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=3600)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"vlbeam run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    import pyarrow.dataset as ds

    def rows(table: str) -> list[dict]:
        return ds.dataset(out / table, partitioning="hive").to_table().to_pylist()

    windows = rows("video_windows")
    by_pass: dict[str, dict[str, int]] = {}
    for w in windows:
        entry = by_pass.setdefault(w["grounding_pass"], {"windows": 0, "frames": 0})
        entry["windows"] += 1
        entry["frames"] += w["num_frames"]
    summary = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    return {
        "strategy": strategy,
        "wall_s": round(wall, 2),
        "frames_sent": reader.frames,
        "model_calls": reader.calls,
        "visual_tokens": reader.visual_tokens,
        "by_pass": by_pass,
        "events": [{k: e[k] for k in EVENT_COLUMNS} for e in rows("video_events")],
        "summary": summary,
    }


def best_match(truth: Event, found: list[dict]) -> tuple[tuple[float, float] | None, float]:
    query = QUERY_OF[truth.colour]
    spans = [(e["start_s"], e["end_s"]) for e in found if e["query"] == query]
    if not spans:
        return None, 0.0
    span = max(spans, key=lambda s: iou(s, (truth.start_s, truth.end_s)))
    return span, iou(span, (truth.start_s, truth.end_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "bench_grounding_cost.json"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlbeam-grounding-"))
    work.mkdir(parents=True, exist_ok=True)
    events = events_for(args.duration_s)

    started = time.perf_counter()
    videos = {
        "events": write_event_video(work / "videos" / "events.mp4", args.duration_s, events),
        "nothing": write_event_video(work / "videos" / "nothing.mp4", args.duration_s, []),
    }
    made_s = time.perf_counter() - started
    print(f"made two {args.duration_s / 60:g}-minute 160x90 videos in {made_s:.1f} s ({work})")

    runs: dict[str, dict[str, dict]] = {}
    for name, video in videos.items():
        for strategy in ("dense", "coarse-to-fine"):
            reader = FrameReader()
            result = run_vlbeam(video, work / "out" / f"{name}-{strategy}", strategy, reader)
            runs.setdefault(name, {})[strategy] = result
            print(f"  {name:8s} {strategy:15s} {result['wall_s']:7.1f} s", flush=True)

    lines = ["", f"{'video':8s} {'strategy':15s} {'frames':>7s} {'calls':>6s} "
             f"{'vis. tokens':>11s} {'wall s':>7s}  frames per pass"]  # fmt: skip
    for name, by_strategy in runs.items():
        for strategy, r in by_strategy.items():
            passes = ", ".join(
                f"{p} {v['frames']} ({v['windows']} calls)" for p, v in sorted(r["by_pass"].items())
            )
            lines.append(
                f"{name:8s} {strategy:15s} {r['frames_sent']:7d} {r['model_calls']:6d} "
                f"{r['visual_tokens']:11,d} {r['wall_s']:7.1f}  {passes}"
            )
    dense, c2f = runs["events"]["dense"], runs["events"]["coarse-to-fine"]
    lines += ["", f"{'event (truth)':28s} {'dense found':>17s} {'IoU':>5s} "
              f"{'coarse-to-fine found':>21s} {'IoU':>5s}  same as dense (±{STEP_S:g} s)"
              ]  # fmt: skip
    per_event = []
    for event in events:
        d_span, d_iou = best_match(event, dense["events"])
        c_span, c_iou = best_match(event, c2f["events"])
        same = (
            d_span is not None
            and c_span is not None
            and abs(d_span[0] - c_span[0]) <= STEP_S + 1e-9
            and abs(d_span[1] - c_span[1]) <= STEP_S + 1e-9
        )
        per_event.append(
            {"colour": event.colour, "start_s": event.start_s, "end_s": event.end_s,
             "dense": d_span, "dense_iou": d_iou, "coarse_to_fine": c_span, "c2f_iou": c_iou,
             "same_as_dense": same}
        )  # fmt: skip

        def fmt(span):
            return "-" if span is None else f"{span[0]:.1f}-{span[1]:.1f}"

        truth = f"{event.colour} {event.start_s:.1f}-{event.end_s:.1f}"
        lines.append(
            f"{truth:28s} {fmt(d_span):>17s} {d_iou:5.2f} {fmt(c_span):>21s} {c_iou:5.2f}  "
            f"{'yes' if same else 'NO'}"
        )
    nothing = runs["nothing"]["coarse-to-fine"]
    checks = {
        "coarse-to-fine frames <= 1/5 of dense": c2f["frames_sent"] * 5 <= dense["frames_sent"],
        "every event found with IoU >= 0.9": all(e["c2f_iou"] >= 0.9 for e in per_event),
        "the same events dense finds, within one frame step": all(
            e["same_as_dense"] for e in per_event
        ),
        "no extra events": len(c2f["events"]) == len(events),
        "no-event video: only the coarse pass sent": set(nothing["by_pass"]) == {"coarse"}
        and not nothing["events"],
    }
    share = c2f["frames_sent"] / dense["frames_sent"]
    lines += ["", f"coarse-to-fine sent {share:.1%} of dense's frames "
              f"({c2f['frames_sent']:,} of {dense['frames_sent']:,}), "
              f"{c2f['model_calls']} calls vs {dense['model_calls']}"]  # fmt: skip
    lines += [f"  [{'ok' if ok else 'FAILED'}] {what}" for what, ok in checks.items()]
    lines += ["", "vlbeam's summary, coarse-to-fine on the events video:", *c2f["summary"]]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "duration_s": args.duration_s,
        "video_size": [160, 90],
        "source_fps": FPS,
        "coarse": COARSE,
        "queries": QUERIES,
        "made_videos_s": made_s,
        "runs": runs,
        "events": per_event,
        "checks": checks,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
