"""The commands the cell prints can be run as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

from llmcell.up_usage import cli_path, usage


def test_the_printed_bench_command_names_a_runnable_llmcell(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    line = next(x for x in usage("http://127.0.0.1:8888", "/sax/test/smollm2",
                                 "http://127.0.0.1:10000").splitlines() if " bench " in x)
    exe = shlex.split(line)[0]
    assert exe == cli_path() and Path(exe).is_file(), line
