"""The render helper's lifetime: its own process group (a timeout or a close kills it and what
it started, e.g. pdftoppm), and a parent-death signal (a SIGKILLed worker takes its helpers
along, even one that is stuck and would never read the end of its pipe)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vlbeam.transforms.media.helper_process import HelperProcess

SAMPLE = str(Path(__file__).resolve().parents[2] / "samples" / "born_digital.pdf")

PARENT = f"""
import sys, time
from vlbeam.transforms.media.helper_process import HelperProcess
helper = HelperProcess()
helper.count_pages("d", {SAMPLE!r}, None)
print(helper.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_the_helper_runs_in_its_own_process_group_and_close_kills_it():
    helper = HelperProcess()
    try:
        assert helper.count_pages("d", SAMPLE, None) >= 1
        pid = helper.pid
        assert os.getpgid(pid) == pid != os.getpgid(0)  # old code: the worker's group
    finally:
        helper.close()
    assert _gone(pid, 5)


@pytest.mark.timeout(60)
def test_a_stuck_helper_dies_with_its_killed_parent():
    """Old code: a helper that can't read its pipe's end (here: stopped, as one stuck in a
    render loop) outlived its SIGKILLed parent (seen: still there after 5 s)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        helper_pid = int(parent.stdout.readline())
        os.kill(helper_pid, signal.SIGSTOP)  # stuck: it will never see its stdin close
        parent.kill()
        parent.wait(timeout=10)
        assert _gone(helper_pid, 5), "the helper outlived its parent"
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(helper_pid, signal.SIGKILL)
