"""`bench/server_overhead.py` end to end, small: both paths run every workload, the summary holds
numbers for each figure, and the plot is a PNG."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.processes import run_group

from tests.bench.test_bench import PNG_MAGIC

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "server_overhead.py"


@pytest.mark.slow
def test_a_small_run_reports_every_figure_and_plots(tmp_path):
    out, png = tmp_path / "overhead.json", tmp_path / "overhead.png"
    run = run_group([sys.executable, str(SCRIPT), "--requests", "4", "--max-tokens", "8",
                     "--rounds", "1", "--per-client", "2", "--json", str(out),
                     "--plot", str(png)], timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(out.read_text())["summary"]
    for key in ("throughput_ratio", "concurrent_throughput_ratio", "ttft_added_burst_ms",
                "ttft_added_concurrent_ms", "ttft_added_isolated_ms"):
        assert math.isfinite(summary[key]), key
    assert summary["throughput_ratio"] > 0
    assert set(summary["concurrent_missed_step"]) == {"engine", "http"}
    if summary["burst_pace"] is not None:  # None only when every round's burst split
        for side in ("engine", "http"):
            assert summary["burst_pace"][side]["ingest_ms"] > 0, summary["burst_pace"]
    assert "p50 TTFT added by HTTP" in run.stdout
    assert png.read_bytes().startswith(PNG_MAGIC)
