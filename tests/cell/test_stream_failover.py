"""Mid-stream failover on a real cell: 20 concurrent streams of 256 tokens through the gateway to
two replicas (fp32), and `kill -9` of one replica's server while they stream. No stream ends in
an error, and each text is the text of the same request on the undisturbed cell: greedy, and
seeded sampling too (the seed's draws are replayed). Usage counts the whole answer."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cell.conftest import Cell, Proc

N, TOKENS = 20, 256


def start_server(cell: Cell, name: str) -> Proc:
    p = Proc("server", "--admin", cell.admin.url, "--server-id", name, "--memory", "1536MiB",
             "--threads", "1", "--kv-cache-memory", "256MiB", "--max-model-len", "2048",
             "--dtype", "float32", env=cell.env).wait()
    cell.procs.append(p)
    return p


def stream(url: str, i: int, sampling: dict, progress: list) -> dict:
    body = {"model": "smollm2", "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, **sampling,
            "messages": [{"role": "user", "content": f"Tell a long story about river {i}."}]}
    text, finishes, roles, usage, errors, ids = "", [], 0, None, [], set()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if "error" in data:
                errors.append(data["error"])
                continue
            ids.add(data["id"])
            usage = data.get("usage") or usage
            for c in data["choices"]:
                assert "token_ids" not in c  # the gateway keeps them to itself
                roles += "role" in c["delta"]
                text += c["delta"].get("content") or ""
                if c["finish_reason"]:
                    finishes.append(c["finish_reason"])
            progress[i] = len(text)
    return {"text": text, "finishes": finishes, "roles": roles, "usage": usage,
            "errors": errors, "ids": ids}


def run(cell: Cell, sampling: dict, kill=None) -> list[dict]:
    progress = [0] * N
    with ThreadPoolExecutor(N) as pool:
        futures = [pool.submit(stream, cell.gateway.url, i, sampling, progress) for i in range(N)]
        if kill is not None:
            deadline = time.monotonic() + 120
            while sum(1 for p in progress if p > 200) < N // 2:  # mid-stream for most
                assert time.monotonic() < deadline, progress
                time.sleep(0.05)
            kill()
        return [f.result() for f in futures]


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 7}],
                         ids=["greedy", "seeded"])
def test_streams_go_on_when_a_replica_dies_mid_stream(cell, sampling):
    cell.start_admin()
    servers = [start_server(cell, f"s{i}") for i in range(2)]
    cell.start_gateway()
    cell.publish(2)
    cell.wait_active(2)
    undisturbed = run(cell, sampling)
    disturbed = run(cell, sampling, kill=servers[1].kill9)
    metrics = httpx.get(cell.gateway.url + "/metrics").text
    moved = sum(float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("llmcell:gateway_streams_resumed_total"))
    assert moved >= 1, "no stream was on the replica that died"
    for i, (want, got) in enumerate(zip(undisturbed, disturbed)):
        assert not got["errors"], (i, got["errors"])
        assert got["finishes"] == ["length"] and got["roles"] == 1 and len(got["ids"]) == 1
        assert got["usage"]["completion_tokens"] == TOKENS, got["usage"]
        assert got["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]
        assert got["text"] == want["text"], f"stream {i} differs"
