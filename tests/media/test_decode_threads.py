"""Video decoding threads per helper (issue #27): a pool with one helper per core decodes on
one thread in each helper (frame threading costs ~20 % more CPU per frame), a lone helper uses
every core; the frames are the same either way."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.video_fixtures import read_stamp, write_stamped
from vlbeam.transforms.helper_pool import HelperPool, resolve_workers
from vlbeam.transforms.media.helper_process import HelperProcess, _ChildState
from vlbeam.transforms.media.video_decode import SamplingConfig


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> Path:
    times = [i / 25 for i in range(250)]  # 10 s at 25 fps, a keyframe every 2 s
    return write_stamped(tmp_path_factory.mktemp("threads") / "v.mp4", times, gop=50)


def test_child_opens_videos_with_the_threads_it_was_given(stamped):
    for threads in (1, 3):
        state = _ChildState(decode_threads=threads)
        container, _info = state.open_video(str(stamped))
        assert container.streams.video[0].thread_count == threads
        state.video[0].close()
    # 0: FFmpeg's choice, as a plain open and decode gets it
    import av

    with av.open(str(stamped)) as plain:
        stream = plain.streams.video[0]
        stream.thread_type = "AUTO"
        next(plain.decode(stream))
        auto = stream.thread_count
    state = _ChildState()
    container, _info = state.open_video(str(stamped))
    assert container.streams.video[0].thread_count == auto
    container.close()


def test_one_thread_or_many_decode_the_same_frames(stamped):
    cfg = SamplingConfig(fps=4.0)
    stamps = {}
    for threads in (0, 1):
        helper = HelperProcess(decode_threads=threads)
        try:
            frames, errors = helper.sample_video(str(stamped), 1.0, 9.0, cfg, timeout_s=60)
        finally:
            helper.close()
        assert errors == 0
        stamps[threads] = [(f.time_s, read_stamp(Image.open(io.BytesIO(f.image)))) for f in frames]
    assert len(stamps[0]) == 32
    assert stamps[0] == stamps[1]


def test_the_pool_shares_the_cores_out_among_its_helpers():
    cores = resolve_workers(0)
    for workers in (1, 2, cores + 1):
        pool = HelperPool(workers, 256)
        try:
            assert [h._decode_threads for h in pool._helpers] == [
                max(1, cores // workers)
            ] * workers
        finally:
            pool.close()


def test_the_helper_is_started_with_its_threads(stamped):
    helper = HelperProcess(decode_threads=3)
    try:
        assert helper.probe_video(str(stamped), timeout_s=60).duration_s > 9
        with open(f"/proc/{helper.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[-2] == b"3"
    finally:
        helper.close()
    with pytest.raises(ValueError):
        HelperProcess(decode_threads=-1)
