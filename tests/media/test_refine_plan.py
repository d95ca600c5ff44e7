"""Coarse-to-fine planning (pure): the coarse pass's windows, the refine windows planned from
its candidates (margins, merging, clamping, the overlap of two coarse windows, an answer that
can't be read), and the flags' validation."""

from __future__ import annotations

import pytest

from vlbeam.schemas.elements import SourceFile, VideoWindow, WindowPass
from vlbeam.transforms.media.video_decode import SamplingConfig, target_times
from vlbeam.transforms.media.work_units import (
    Candidate,
    CoarseAnswer,
    GroundingStrategy,
    VideoConfig,
    dense_frames,
    plan_coarse_windows,
    plan_refine_windows,
    plan_video_windows,
    plan_windows,
)

SOURCE = SourceFile("file:///v.mp4", "a" * 64, "video", 1)


def config(margin: float | None = 4.0, **kwargs) -> VideoConfig:
    strategy = GroundingStrategy(
        "coarse-to-fine",
        coarse_window_s=kwargs.pop("coarse_window_s", 100.0),
        coarse_fps=kwargs.pop("coarse_fps", 0.5),
        refine_margin_s=margin,
    )
    return VideoConfig(
        window_s=kwargs.pop("window_s", 20.0),
        overlap_s=kwargs.pop("overlap_s", 2.0),
        sampling=SamplingConfig(fps=2.0, max_frames=kwargs.pop("max_frames", 128)),
        strategy=strategy,
        **kwargs,
    )


def answer(index, start, end, *candidates) -> CoarseAnswer:
    return CoarseAnswer(index, start, end, tuple(Candidate(*c) for c in candidates))


def spans(windows: list[VideoWindow]) -> list[tuple[float, float]]:
    return [(w.start_s, w.end_s) for w in windows]


def test_a_candidate_is_widened_by_the_margin_on_each_side():
    cfg = config(margin=4.0)
    [window] = plan_refine_windows(SOURCE, 300.0, [answer(0, 0, 100, (1, 40.0, 46.0))], cfg)
    assert (window.start_s, window.end_s) == (36.0, 50.0)
    assert window.grounding_pass == WindowPass("refine", (0,), (1,))
    assert window.index == 0 and window.source == SOURCE and window.duration_s == 300.0


def test_the_default_margin_is_two_coarse_intervals_and_spans_land_on_the_dense_grid():
    cfg = config(margin=None, coarse_fps=0.25)  # 4 s between coarse frames: margin 8 s
    assert cfg.coarse_interval_s == 4.0 and cfg.refine_margin_s == 8.0
    [window] = plan_refine_windows(SOURCE, 300.0, [answer(0, 0, 100, (1, 40.3, 40.3))], cfg)
    # 32.3..48.3 widened to whole steps of 1/fps (0.5 s): a refine window samples the
    # instants a dense window would
    assert (window.start_s, window.end_s) == (32.0, 48.5)
    instants = target_times(window.start_s, window.end_s, cfg.refine_sampling)
    assert all(abs(t * 2 - round(t * 2)) < 1e-9 for t in instants)


def test_near_candidates_merge_and_far_ones_do_not():
    cfg = config(margin=4.0)
    near = answer(0, 0, 100, (1, 10.0, 12.0), (1, 18.0, 19.0))  # 14..16 and 14..23 overlap
    far = answer(1, 98, 198, (2, 150.0, 151.0))
    windows = plan_refine_windows(SOURCE, 300.0, [near, far], cfg)
    assert spans(windows) == [(6.0, 23.0), (146.0, 155.0)]
    assert [w.grounding_pass for w in windows] == [
        WindowPass("refine", (0,), (1,)),
        WindowPass("refine", (1,), (2,)),
    ]
    assert [w.index for w in windows] == [0, 1]
    # spans that only touch merge too; a gap of one grid step does not
    touching = answer(0, 0, 100, (1, 10.0, 12.0), (1, 20.0, 21.0))  # 6..16 and 16..25
    assert spans(plan_refine_windows(SOURCE, 300.0, [touching], cfg)) == [(6.0, 25.0)]
    apart = answer(0, 0, 100, (1, 10.0, 12.0), (1, 20.5, 21.0))  # 6..16 and 16.5..25
    assert spans(plan_refine_windows(SOURCE, 300.0, [apart], cfg)) == [(6.0, 16.0), (16.5, 25.0)]


def test_merged_queries_of_near_candidates_are_both_kept():
    cfg = config(margin=4.0)
    windows = plan_refine_windows(
        SOURCE, 300.0, [answer(0, 0, 100, (2, 30.0, 31.0), (1, 33.0, 34.0))], cfg
    )
    assert spans(windows) == [(26.0, 38.0)]
    assert windows[0].grounding_pass.query_numbers == (1, 2)


def test_spans_are_clamped_to_the_videos_ends():
    cfg = config(margin=4.0)
    duration = 250.3
    answers = [answer(0, 0, 100, (1, 1.0, 2.0)), answer(2, 196, 250.3, (1, 249.0, 250.3))]
    windows = plan_refine_windows(SOURCE, duration, answers, cfg)
    assert spans(windows) == [(0.0, 6.0), (245.0, 250.3)]
    assert all(0 <= w.start_s < w.end_s <= duration for w in windows)


def test_a_long_candidate_is_cut_into_overlapping_dense_windows():
    cfg = config(margin=4.0, window_s=20.0, overlap_s=2.0)
    windows = plan_refine_windows(SOURCE, 300.0, [answer(0, 0, 100, (1, 10.0, 46.0))], cfg)
    assert spans(windows) == [(6.0, 26.0), (24.0, 44.0), (42.0, 50.0)]
    assert {w.grounding_pass for w in windows} == {WindowPass("refine", (0,), (1,))}


def test_a_candidate_in_the_overlap_of_two_coarse_windows_is_refined_once():
    """Coarse windows 0..100 and 98..198 both see an event at 97..101: each clamps it to its
    own window, and the widened spans merge into one refine span naming both windows."""
    cfg = config(margin=4.0)
    coarse = plan_coarse_windows(SOURCE, 300.0, cfg)
    assert spans(coarse)[:2] == [(0.0, 100.0), (98.0, 198.0)]
    answers = [
        answer(0, 0.0, 100.0, (1, 97.0, 100.0)),
        answer(1, 98.0, 198.0, (1, 98.0, 101.0)),
        answer(2, 196.0, 296.0),
    ]
    [window] = plan_refine_windows(SOURCE, 300.0, answers, cfg)
    assert (window.start_s, window.end_s) == (93.0, 105.0)
    assert window.grounding_pass == WindowPass("refine", (0, 1), (1,))


def test_an_answer_that_cannot_be_read_refines_its_whole_coarse_window():
    cfg = config(margin=4.0, window_s=40.0, overlap_s=4.0)
    answers = [
        CoarseAnswer(0, 0.0, 100.0, None),  # unreadable (or no answer at all)
        answer(1, 96.0, 196.0, (1, 150.0, 151.0)),
        answer(2, 192.0, 292.0),  # nothing may match here
    ]
    windows = plan_refine_windows(SOURCE, 300.0, answers, cfg)
    assert spans(windows) == [(0.0, 40.0), (36.0, 76.0), (72.0, 100.0), (146.0, 155.0)]
    # every query is looked for in the unread window, never none
    assert {w.grounding_pass for w in windows[:3]} == {WindowPass("refine", (0,), ())}
    assert windows[0].grounding_pass.wants(1) and windows[0].grounding_pass.wants(7)
    assert not windows[3].grounding_pass.wants(2)


def test_an_unread_window_absorbs_the_candidates_it_overlaps():
    cfg = config(margin=4.0, window_s=200.0)
    answers = [CoarseAnswer(0, 0.0, 100.0, None), answer(1, 98.0, 198.0, (2, 99.0, 102.0))]
    [window] = plan_refine_windows(SOURCE, 300.0, answers, cfg)
    assert (window.start_s, window.end_s) == (0.0, 106.0)
    assert window.grounding_pass == WindowPass("refine", (0, 1), ())  # all queries


def test_no_candidate_anywhere_plans_no_window():
    cfg = config()
    answers = [
        answer(i, w.start_s, w.end_s) for i, w in enumerate(plan_coarse_windows(SOURCE, 300.0, cfg))
    ]
    assert plan_refine_windows(SOURCE, 300.0, answers, cfg) == []


def test_the_coarse_pass_cuts_long_windows_and_the_dense_strategy_is_unchanged():
    cfg = config(coarse_window_s=100.0, overlap_s=2.0)
    coarse = plan_video_windows(SOURCE, 250.0, cfg)
    assert spans(coarse) == [(0.0, 100.0), (98.0, 198.0), (196.0, 250.0)]
    assert {w.grounding_pass.name for w in coarse} == {"coarse"}
    assert coarse[1].describe() == "coarse window 1 (98.0-198.0 s)"
    dense = VideoConfig(window_s=20.0, overlap_s=2.0)
    assert plan_video_windows(SOURCE, 250.0, dense) == plan_windows(SOURCE, 250.0, dense)
    assert plan_video_windows(SOURCE, 250.0, cfg.dense()) == plan_windows(SOURCE, 250.0, cfg)
    assert {w.grounding_pass.name for w in plan_windows(SOURCE, 250.0, cfg)} == {"dense"}


def test_the_passes_sample_at_their_own_density():
    cfg = VideoConfig(
        sampling=SamplingConfig(fps=2.0, mode="keyframes"),
        strategy=GroundingStrategy("coarse-to-fine", coarse_fps=0.25),
    )
    assert cfg.sampling_for("coarse") == SamplingConfig(fps=0.25, mode="keyframes")
    assert cfg.sampling_for("refine") == SamplingConfig(fps=2.0, mode="frames")
    assert cfg.sampling_for("dense") == cfg.sampling


def test_dense_frames_counts_the_dense_plans_sampling_instants():
    cfg = VideoConfig(window_s=60.0, overlap_s=4.0)
    expected = sum(
        len(target_times(w.start_s, w.end_s, cfg.sampling)) for w in plan_windows(SOURCE, 3600, cfg)
    )
    assert dense_frames(3600.0, cfg) == expected == 64 * 120 + 32  # 65 windows, the last 16 s


def test_the_margin_must_cover_one_coarse_sampling_interval():
    config(margin=2.0, coarse_fps=0.5)  # exactly one interval: fine
    with pytest.raises(ValueError, match="less than one coarse sampling interval"):
        config(margin=1.9, coarse_fps=0.5)
    # thinned to --max-frames-per-window: 100 s / 10 frames = 10 s between coarse frames
    assert config(margin=None, max_frames=10).coarse_interval_s == 10.0
    with pytest.raises(ValueError, match="10 s"):
        config(margin=9.0, max_frames=10)
    with pytest.raises(ValueError, match="coarse-fps"):
        GroundingStrategy("coarse-to-fine", coarse_fps=0)
    with pytest.raises(ValueError, match="coarse-window-seconds"):
        GroundingStrategy("coarse-to-fine", coarse_window_s=-1)
    with pytest.raises(ValueError, match="negative"):
        GroundingStrategy("coarse-to-fine", refine_margin_s=-1)
    with pytest.raises(ValueError, match="grounding-strategy"):
        GroundingStrategy("sparse")
    with pytest.raises(ValueError, match="overlap"):
        config(coarse_window_s=2.0, overlap_s=2.0)
    # the dense strategy ignores the coarse settings
    VideoConfig(strategy=GroundingStrategy(refine_margin_s=0.1))


def test_the_flags_reach_the_video_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from vlbeam.pipeline.options import VlbeamOptions, video_config

    argv = ["--grounding-strategy=coarse-to-fine", "--coarse-window-seconds=300",
            "--coarse-fps=0.5", "--refine-margin-s=3"]  # fmt: skip
    cfg = video_config(PipelineOptions(argv).view_as(VlbeamOptions))
    assert cfg.strategy == GroundingStrategy("coarse-to-fine", 300.0, 0.5, 3.0)
    default = video_config(PipelineOptions([]).view_as(VlbeamOptions))
    assert default.strategy == GroundingStrategy() and not default.strategy.coarse_to_fine
    with pytest.raises(ValueError, match="less than one coarse sampling interval"):
        video_config(PipelineOptions([*argv[:3], "--refine-margin-s=1"]).view_as(VlbeamOptions))


def test_window_passes_are_validated():
    with pytest.raises(ValueError, match="grounding pass"):
        WindowPass("sparse")
    with pytest.raises(ValueError, match="only a refine window"):
        WindowPass("coarse", (0,))
    assert WindowPass().wants(3) and WindowPass("refine", (0,), (1,)).wants(1)
