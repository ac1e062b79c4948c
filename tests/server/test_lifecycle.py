"""Disconnects free KV blocks; SIGTERM drains running requests and exits 0."""

from __future__ import annotations

import threading
import time

import httpx

from tests.server.conftest import MODEL, ServerProcess

LONG = {"model": MODEL, "prompt": "Write a very long essay about rivers.", "max_tokens": 1500,
        "ignore_eos": True}


def wait_idle(server, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (server.metric("llmcell:num_requests_running") == 0
                and server.metric("llmcell:kv_cache_usage_perc") == 0):
            return True
        time.sleep(0.05)
    return False


def test_stream_disconnect_frees_blocks(server):
    with httpx.stream("POST", server.url + "/v1/completions", json={**LONG, "stream": True},
                      timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 6:
                # still streaming: the request holds blocks (checked before leaving the loop,
                # since leaving it closes the stream and the server frees them at once)
                assert server.metric("llmcell:kv_cache_usage_perc") > 0
                assert server.metric("llmcell:num_requests_running") == 1
                break
    assert wait_idle(server), "aborted stream still holds KV blocks"


def test_non_stream_disconnect_frees_blocks(server):
    try:
        httpx.post(server.url + "/v1/completions", json=LONG, timeout=1.0)
    except httpx.ReadTimeout:
        pass
    assert wait_idle(server), "abandoned request still running"


def test_sigterm_drains_then_exits_zero():
    s = ServerProcess("--kv-cache-memory", "64MiB", "--drain-timeout", "60")
    result = {}

    def stream():
        text, finish = [], None
        body = {**LONG, "max_tokens": 120, "stream": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    import json

                    c = json.loads(line[6:])
                    text.append(c["choices"][0]["text"])
                    finish = c["choices"][0]["finish_reason"] or finish
                    result["started"] = True
        result["finish"] = finish

    t = threading.Thread(target=stream)
    t.start()
    while not result.get("started"):
        time.sleep(0.02)
    s.proc.terminate()
    time.sleep(0.3)
    assert httpx.get(s.url + "/ready").status_code == 503
    r = httpx.post(s.url + "/v1/completions", json={"model": MODEL, "prompt": "hi"})
    assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]
    t.join(120)
    assert result["finish"] == "length", "the running request must finish during the drain"
    assert s.proc.wait(60) == 0
