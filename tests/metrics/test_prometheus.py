"""A real Prometheus scrapes a running cell it found through the admin's service discovery;
`llmcell bench` drives load; Prometheus' quantiles agree with the client's own figures and every
dashboard panel has data."""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time

import httpx
import pytest

from llmcell.metrics.buckets import LATENCY_BUCKETS
from llmcell.metrics.dashboard import dashboard
from tests.cell.conftest import SAX
from tests.metrics.test_rules_and_dashboard import require
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow

CUDA_ONLY = {"Accelerator memory used"}
"""Panels whose metric exists only on CUDA servers: empty on this CPU machine by design."""


class Prometheus:
    def __init__(self, binary: str, admin: str, tmp_path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "llmcell", "http_sd_configs": [
                {"url": f"{admin}/prometheus/targets", "refresh_interval": "1s"}]}]}))
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_targets(self, components: set[str], timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                active = httpx.get(self.url + "/api/v1/targets", timeout=5).json()["data"][
                    "activeTargets"]
                up = [t for t in active if t["health"] == "up"]
                if {t["labels"].get("component") for t in up} >= components:
                    return up
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus did not find {components}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def bucket(value: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS, value)


def test_prometheus_discovers_the_cell_and_agrees_with_the_bench_client(cell, tmp_path):
    binary = require("prometheus")
    cell.start_admin()
    cell.start_server("s1")
    cell.start_gateway("--policy", "kv_affinity")  # the dashboard's KV-routing panel has data
    cell.publish(1)
    cell.wait_active(1)
    prom = Prometheus(binary, cell.admin.url, tmp_path)
    try:
        targets = prom.wait_targets({"admin", "gateway", "model-server"})
        server = next(t for t in targets if t["labels"]["component"] == "model-server")
        assert server["labels"]["server"] == "s1" and server["labels"]["model"] == SAX

        out = tmp_path / "bench"
        r = subprocess.run(
            [sys.executable, "-m", "llmcell.cli", "bench", "--url", cell.gateway.url, "--model",
             "smollm2", "--num-requests", "24", "--concurrency", "4", "--prompt-tokens", "40",
             "--output-tokens", "24", "--output", str(out), "--no-progress"],
            capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        client = json.loads((out / "summary.json").read_text())
        assert client["completed"] == 24
        time.sleep(3)  # two scrapes after the last request

        route = 'route="/v1/chat/completions"'
        count = prom.scalar(f"sum(llmcell:gateway_request_latency_seconds_count{{{route}}})")
        assert count == 24
        for q in (50, 95, 99):
            e2e = prom.scalar(f"histogram_quantile({q / 100}, sum by (le) "
                              f"(llmcell:gateway_request_latency_seconds_bucket{{{route}}}))")
            ttft = prom.scalar(f"histogram_quantile({q / 100}, sum by (le) "
                               "(llmcell:gateway_time_to_first_token_seconds_bucket))")
            assert abs(bucket(e2e) - bucket(client["e2e_s"][f"p{q}"])) <= 1, (
                q, e2e, client["e2e_s"])
            assert abs(bucket(ttft) - bucket(client["ttft_s"][f"p{q}"])) <= 1, (
                q, ttft, client["ttft_s"])
        # the server's own view of the same requests
        assert prom.scalar("sum(llmcell:e2e_request_latency_seconds_count)") == 24

        empty = []
        for panel in dashboard()["panels"]:
            if panel["title"] in CUDA_ONLY:
                continue
            for target in panel["targets"]:
                if not prom.query(target["expr"]):
                    empty.append((panel["title"], target["expr"]))
        assert not empty, f"dashboard queries without data: {empty}"
    finally:
        prom.stop()
