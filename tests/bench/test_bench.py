"""`llmcell bench`: workloads, the report (Markdown from the same numbers as the JSON, valid PNGs),
and a real run against `llmcell up`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.processes import kill_group

from llmcell.bench import datasets
from llmcell.bench.client import RequestResult
from llmcell.bench.report import markdown, write_report
from tests.server.conftest import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_workloads_are_seeded_and_shared_prefix_shares_prefixes():
    a = datasets.synthetic(10, 50, 20, seed=1)
    assert a == datasets.synthetic(10, 50, 20, seed=1) != datasets.synthetic(10, 50, 20, seed=2)
    assert all(25 <= len(r.messages[0]["content"].split()) <= 80 for r in a)
    s = datasets.shared_prefix(40, prefixes=3, prefix_tokens=200, output_tokens=16, seed=0)
    systems = {r.messages[0]["content"] for r in s}
    assert len(systems) == 3 and {r.prefix_id for r in s} == {0, 1, 2}
    assert all(len(r.messages[0]["content"].split()) > 200 for r in s)


def test_multi_turn_conversations_share_a_preamble_and_a_system_prompt_per_tenant():
    convs = datasets.multi_turn(4, 3, 5, system_tokens=300, shared_tokens=100,
                                output_tokens=8, seed=0)
    assert convs == datasets.multi_turn(4, 3, 5, 300, 100, 8, seed=0)
    assert len(convs) == 12 and all(len(c.questions) == 5 for c in convs)
    systems = {c.tenant: c.system for c in convs}
    assert len(set(systems.values())) == 4
    assert all(c.system == systems[c.tenant] for c in convs)
    preamble = " ".join(systems[0].split()[:100])
    assert all(s.startswith(preamble) for s in systems.values())
    assert systems[0].split()[:130] != systems[1].split()[:130]
    with pytest.raises(ValueError, match="shared_tokens=400"):
        datasets.multi_turn(1, 1, 1, 300, 400, 8, seed=0)


def test_conversations_carry_their_answers_into_the_next_turn():
    """Against a real server: each turn's messages hold the answers before it, so its prompt
    grows by more than the new question."""
    import asyncio

    from llmcell.bench.client import run_conversations
    from tests.server.conftest import ServerProcess

    convs = datasets.multi_turn(1, 2, 3, system_tokens=60, shared_tokens=0, output_tokens=6,
                                seed=0)
    server = ServerProcess("--kv-cache-memory", "64MiB", "--max-model-len", "1024")
    try:
        results, _ = asyncio.run(run_conversations(server.url, "smollm2-135m-instruct", convs, 2))
    finally:
        server.stop()
    assert len(results) == 6 and all(r.ok and r.text for r in results)
    for turns in (results[:3], results[3:]):  # one conversation's turns, in order
        for before, after in zip(turns, turns[1:]):
            assert after.prompt_tokens > before.prompt_tokens + before.output_tokens


def test_jsonl_dataset_and_its_errors(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text('{"prompt": "hi", "max_tokens": 5}\n\n{"messages": [{"role": "user", '
                 '"content": "yo"}]}\n')
    rows = datasets.from_jsonl(f, 5, 16)
    assert [r.max_tokens for r in rows] == [5, 16, 5, 16, 5]
    f.write_text('{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"w.jsonl:1: needs a 'prompt'"):
        datasets.from_jsonl(f, 1, 16)


def fake_results() -> list[RequestResult]:
    out = []
    for i in range(20):
        r = RequestResult(start=i * 0.1, end=i * 0.1 + 1.0 + i * 0.01, ttft=0.1 + i * 0.001,
                          chunk_times=[i * 0.1 + 0.1 + k * 0.05 for k in range(10)],
                          prompt_tokens=30, output_tokens=10)
        out.append(r)
    out.append(RequestResult(start=0.0, end=0.5, error="HTTP 503: busy"))
    return out


def check_report(folder) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    md = (folder / "summary.md").read_text()
    for key, name in (("ttft_s", "TTFT"), ("e2e_s", "end-to-end latency")):
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        expected = [summary[key][k] for k in ("mean", "p50", "p90", "p95", "p99")]
        assert [float(c) for c in cells] == pytest.approx([v * 1000 for v in expected],
                                                          abs=0.051), (row, summary[key])
    tput = float(re.search(r"output token throughput: ([\d.]+)", md).group(1))
    assert tput == pytest.approx(summary["output_token_throughput"], abs=0.051)
    for png in ("latency_cdf.png", "throughput.png"):
        data = (folder / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        import matplotlib.image
        assert matplotlib.image.imread(folder / png).shape[0] > 100
    return summary


def test_report_markdown_matches_json_and_plots_are_images(tmp_path):
    config = {"url": "http://x", "model": "m", "dataset": "synthetic", "concurrency": 4,
              "rate": None}
    summary = write_report(fake_results(), 3.0, config, tmp_path)
    assert summary["completed"] == 20 and summary["failed"] == 1
    assert summary["errors"] == {"HTTP 503": 1}
    assert summary["ttft_s"]["p50"] == pytest.approx(0.1095)
    assert summary["output_token_throughput"] == pytest.approx(200 / 3.0)
    check_report(tmp_path)
    assert "HTTP 503 x1" in markdown(summary)


@pytest.mark.slow
def test_bench_against_llmcell_up_writes_the_report(tmp_path):
    port, admin_port = free_port(), free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "up", "--port", str(port), "--admin-port",
         str(admin_port), "--state", str(tmp_path / "up.sqlite3"), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, "llmcell up exited early"
            if "Ctrl-C stops the cell" in line:
                break
        out = tmp_path / "report"
        r = subprocess.run(
            [sys.executable, "-m", "llmcell.cli", "bench", "--url", f"http://127.0.0.1:{port}",
             "--model", "smollm2", "--num-requests", "12", "--rate", "2", "--prompt-tokens",
             "30", "--output-tokens", "16", "--output", str(out)],
            capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert "12/12" in r.stderr  # the progress bar reached the end
        summary = check_report(out)
        assert summary["completed"] == 12 and summary["config"]["rate"] == 2
        assert (out / "requests.jsonl").read_text().count("\n") == 12
        assert "| TTFT |" in r.stdout
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            kill_group(up)  # whatever of the cell did not stop
