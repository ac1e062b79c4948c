"""The packaged alert rules pass `promtool check rules`; the dashboard is well-formed Grafana JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from llmcell.metrics.alerts import alert_rules_yaml
from llmcell.metrics.dashboard import PANELS, dashboard_json


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("LLMCELL_CI"):
            pytest.fail(f"{binary} is missing in CI: .ci/run installs it with apt-get")
        pytest.skip(f"{binary} is not installed (apt-get install prometheus)")
    return path


def test_promtool_accepts_the_alert_rules(tmp_path):
    promtool = require("promtool")
    rules = tmp_path / "rules.yaml"
    rules.write_text(alert_rules_yaml(latency_slo=15))
    r = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 4 rules found" in r.stdout


def test_dashboard_panels_each_have_queries_and_unique_ids():
    board = json.loads(dashboard_json())
    assert board["uid"] == "llmcell-cell"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) == len(PANELS)
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for needed in ("latency", "time to first token", "time per output token", "tokens/s",
                   "requests/s", "error rate", "waiting", "kv-cache", "replicas", "cpu",
                   "accelerator memory"):
        assert needed in titles, needed
    for panel in board["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
