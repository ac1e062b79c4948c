"""The test helper that stops a command's whole process group."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.processes import run_group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] != "Z"


def _gone_soon(pid: int) -> bool:
    """A killed process takes a moment to die."""
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_a_timed_out_command_takes_its_children_with_it(tmp_path):
    pidfile = tmp_path / "child"
    cmd = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(cmd, timeout=1.0)
    assert _gone_soon(int(pidfile.read_text()))


def test_a_finished_command_leaves_nothing_behind(tmp_path):
    pidfile = tmp_path / "child"
    done = run_group(["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}; echo hi"],
                     timeout=10)
    assert done.returncode == 0 and done.stdout.strip() == "hi"
    assert _gone_soon(int(pidfile.read_text()))
