"""Processes a test starts are stopped with everything they started, however the test ends: each
runs in a process group of its own, and the whole group is killed on a time-out or an error (a
benchmark's `llmcell server` was left running when only its parent was killed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_group(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` whose whole process group is
    killed when it times out (raising TimeoutExpired) or when the caller is interrupted."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    kill_group(proc)  # anything it left behind
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
