"""The gateway's response cache, in process (tests/gateway/harness.py, whose replica records
what it is sent): deterministic requests are answered from it, streams replayed as streams;
other requests, `no-store` and other tenants never see an entry; a new checkpoint, the TTL and
the byte bound retire entries. Pure rules beside them."""

from __future__ import annotations

import httpx
import pytest

from llmcell.engine.loader import resolve_model_path
from llmcell.gateway.response_cache import ResponseCache, cacheable, directives
from tests.gateway.harness import Gateway

TOKEN = "c" * 43
GREEDY = {"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}],
          "max_tokens": 4, "temperature": 0}


@pytest.fixture()
def g(tmp_path):
    g = Gateway(tmp_path, TOKEN, cache_bytes=1 << 20)
    g.publish()
    g.serve()
    yield g
    g.close()


def key(g: Gateway, tenant: str) -> dict:
    r = g.admin.post("/keys", json={"tenant": tenant, "role": "user"})
    g.refresh()
    return {"Authorization": f"Bearer {r.json()['key']}"}


def post(g: Gateway, headers: dict, body: dict = GREEDY, **extra) -> httpx.Response:
    r = g.client.post("/v1/chat/completions", json=body, headers={**headers, **extra})
    assert r.status_code == 200, r.text
    return r


def test_a_deterministic_request_is_answered_from_the_cache_within_its_tenant(g):
    a, b = key(g, "team-a"), key(g, "team-b")
    first = post(g, a)
    assert first.headers["x-llmcell-cache"] == "miss"
    again = post(g, a, dict(GREEDY, user="someone-else", priority=1))  # same answer
    assert again.headers["x-llmcell-cache"] == "hit" and again.json() == first.json()
    assert "x-llmcell-replica" not in again.headers and len(g.chats) == 1
    assert post(g, b).headers["x-llmcell-cache"] == "miss"  # never across tenants
    assert len(g.chats) == 2
    assert post(g, a, **{"Cache-Control": "no-cache"}).headers["x-llmcell-cache"] == "miss"
    assert "x-llmcell-cache" not in post(g, a, **{"Cache-Control": "no-store"}).headers
    assert "x-llmcell-cache" not in post(g, a, dict(GREEDY, temperature=0.7)).headers
    assert post(g, a, dict(GREEDY, temperature=0.7, seed=3)).headers["x-llmcell-cache"] == "miss"
    assert len(g.chats) == 6
    metrics = g.client.get("/metrics", headers=a).text
    assert 'llmcell:gateway_cache_requests_total{model="/sax/test/m",outcome="hit"} 1.0' in metrics


def test_a_stream_is_replayed_as_a_stream(g):
    a = key(g, "team-a")
    body = dict(GREEDY, stream=True)
    first = post(g, a, body)
    again = post(g, a, body)
    assert again.headers["x-llmcell-cache"] == "hit"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.text == first.text and again.text.rstrip().endswith("data: [DONE]")
    assert len(g.chats) == 1


def test_a_new_checkpoint_retires_the_models_answers(tmp_path):
    (tmp_path / "step-2.gguf").symlink_to(resolve_model_path("smollm2-135m-instruct"))
    g = Gateway(tmp_path, TOKEN, cache_bytes=1 << 20, admin={"model_roots": (str(tmp_path),)})
    g.publish()
    g.serve()
    a = key(g, "team-a")
    post(g, a)
    r = g.admin.put("/models", json={"model": "/sax/test/m", "model_path": "smollm2-135m-instruct",
                                     "checkpoint": str(tmp_path / "step-2.gguf"), "replicas": 1})
    assert r.status_code == 200, r.text
    g.serve()  # the server reports the new assignment ready; the gateway re-reads the routes
    assert post(g, a).headers["x-llmcell-cache"] == "miss"
    assert len(g.chats) == 2
    g.close()


def test_the_ttl_and_the_byte_bound_retire_entries():
    now = [0.0]
    cache = ResponseCache(100, ttl=10, clock=lambda: now[0])
    assert cache.put("k1", b"x" * 40, False, 5, "m", "c1")
    assert cache.get("k1", "c1").tokens == 5
    now[0] = 11
    assert cache.get("k1", "c1") is None and cache.bytes == 0
    cache.put("k1", b"x" * 40, False, 5, "m", "c1")
    cache.put("k2", b"y" * 40, False, 5, "m", "c1")
    cache.get("k1", "c1")  # k1 is the most recently used now
    cache.put("k3", b"z" * 40, False, 5, "m", "c1")
    assert cache.get("k2", "c1") is None and cache.get("k1", "c1") and cache.bytes == 80
    assert cache.get("k1", "c2") is None  # another checkpoint: dropped
    assert not cache.put("big", b"b" * 101, False, 0, "m", "c1")


def test_the_rules():
    assert cacheable({"temperature": 0}) and cacheable({"seed": 1, "temperature": 1})
    assert not cacheable({}) and not cacheable({"temperature": 0.2})
    assert directives("No-Store, max-age=0") == {"no-store", "max-age=0"}
    k = ResponseCache.key
    assert k("a", "m", "c", {"x": 1, "y": 2}) == k("a", "m", "c", {"y": 2, "x": 1})
    assert k("a", "m", "c", {"x": 1}) != k("b", "m", "c", {"x": 1})
    assert k("a", "m", "c", {"x": 1}) != k("a", "m", "c2", {"x": 1})
    with pytest.raises(ValueError, match="ttl"):
        ResponseCache(10, ttl=0)
