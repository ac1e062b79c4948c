"""Quotas and fair queuing at the gateway, in process (tests/gateway/harness.py): OpenAI's
rate-limit headers read by the official `openai` client on 200 and 429, token reservations
settled from the answer's usage (streams included), priority bands, and requests that wait for
a slot fairly, with bounds and timeouts that answer instead of hanging."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.gateway.harness import MODEL, Gateway

TOKEN = "q" * 43
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}],
        "max_tokens": 4}


def gateway(tmp_path, **kw) -> Gateway:
    g = Gateway(tmp_path, TOKEN, **kw)
    g.publish()
    g.serve()
    return g


def key(g: Gateway, tenant: str = "team-a", **kw) -> str:
    r = g.admin.post("/keys", json={"tenant": tenant, "role": "user", **kw})
    assert r.status_code == 200, r.text
    g.refresh()
    return r.json()["key"]


def client(g: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url="http://testserver/v1", max_retries=0,
                         http_client=g.client)


def test_the_openai_client_reads_the_rate_limit_headers_on_200_and_429(tmp_path):
    g = gateway(tmp_path)
    c = client(g, key(g, rpm=3, tpm=1000))
    seen = []
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
        assert raw.parse().choices[0].message.content == "Paris"
        seen.append({k: raw.headers[f"x-ratelimit-{k}"] for k in (
            "limit-requests", "remaining-requests", "reset-requests", "limit-tokens",
            "remaining-tokens", "reset-tokens")})
    assert [s["remaining-requests"] for s in seen] == ["2", "1", "0"]
    assert all(s["limit-requests"] == "3" and s["limit-tokens"] == "1000" for s in seen)
    # each reserved ~(4 + 1 + 8) tokens and settled to the 12 the answer used
    assert 1000 - int(seen[-1]["remaining-tokens"]) in range(24, 40)
    assert seen[0]["reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                  max_tokens=8)
    h = e.value.response.headers
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-limit-requests"] == "3"
    assert int(h["retry-after"]) >= 1
    body = e.value.response.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    assert "3 requests per 1m0s" in body["message"]
    g.close()


def test_a_reservation_over_the_whole_limit_says_so(tmp_path):
    g = gateway(tmp_path)
    c = client(g, key(g, tpm=100))
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                  max_tokens=500)
    err = e.value.response.json()["error"]
    assert err["code"] == "request_too_large" and "max_tokens" in err["message"]
    assert "retry-after" not in e.value.response.headers
    g.close()


def test_tenant_limits_bind_all_of_its_keys(tmp_path):
    g = gateway(tmp_path)
    r = g.admin.put("/tenants/team-b", json={"rpm": 2, "weight": 2})
    assert r.status_code == 200, r.text
    assert g.admin.put("/tenants/team-b", json={"rpm": 0}).status_code == 400
    bad = g.admin.put("/tenants/team-b", json={"rpm": -5})
    assert bad.status_code == 400 and "'rpm'" in bad.json()["detail"]
    k1, k2 = key(g, "team-b"), key(g, "team-b")
    codes = [g.client.post("/v1/chat/completions", json=CHAT,
                           headers={"Authorization": f"Bearer {k}"}).status_code
             for k in (k1, k2, k1, k2)]
    assert codes == [200, 200, 429, 429]
    assert g.admin.get("/tenants").json() == [
        {"tenant": "team-b", "rpm": 2, "tpm": None, "concurrency": None, "weight": 2.0}]
    g.close()


def test_a_stream_settles_from_its_usage_chunk_and_the_client_sees_only_what_it_asked(tmp_path):
    g = gateway(tmp_path)
    k = key(g, tpm=1000)
    c = client(g, k)
    chunks = list(c.chat.completions.create(model="m", messages=[{"role": "user",
                                                                  "content": "Hi"}],
                                            max_tokens=100, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Paris"
    assert all(ch.usage is None for ch in chunks)  # not asked for: not sent
    assert g.chats[-1]["stream_options"] == {"include_usage": True}  # asked of the replica
    share = g.app.state.admission.ledger.shares[(f"key:{_key_id(g)}", "tokens")]
    assert share.used == 12  # settled to the usage, not the ~105 reserved
    asked = list(c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=100, stream=True,
        stream_options={"include_usage": True}))
    assert asked[-1].usage.total_tokens == 12 and share.used == 24
    g.close()


def _key_id(g: Gateway) -> str:
    return g.admin.get("/keys").json()[-1]["id"]


def test_priority_bands_are_checked_capped_by_the_key_and_reach_the_engines(tmp_path):
    g = gateway(tmp_path)
    k = key(g, max_priority="batch")
    r = g.client.post("/v1/chat/completions", json=CHAT, headers={
        "Authorization": f"Bearer {k}", "x-llmcell-priority": "urgent"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-llmcell-priority"
    assert "interactive, batch" in r.json()["error"]["message"]
    r = g.admin.post("/keys", json={"tenant": "t", "max_priority": "high"})
    assert r.status_code == 400 and "max_priority" in r.json()["detail"]
    # the engines get the band as `priority` (lower first), never the body's own
    free = key(g, tenant="team-f")
    for api_key, header, want in ((free, None, 0), (free, "batch", 1), (k, "interactive", 1)):
        r = g.client.post("/v1/chat/completions", json=dict(CHAT, priority=0), headers={
            "Authorization": f"Bearer {api_key}", **({"x-llmcell-priority": header}
                                                      if header else {})})
        assert r.status_code == 200, r.text
        assert g.chats[-1]["priority"] == want, (header, g.chats[-1])
    g.close()


async def _post(c: httpx.AsyncClient, k: str, order: list, name: str, **headers) -> int:
    r = await c.post("/v1/chat/completions", json=CHAT,
                     headers={"Authorization": f"Bearer {k}", **headers})
    order.append(name)
    return r.status_code


def test_full_slots_queue_requests_and_a_quiet_tenant_goes_first(tmp_path):
    g = gateway(tmp_path, slots=2)
    a, b = key(g, "team-a"), key(g, "team-b")

    async def go():
        g.hold = asyncio.Event()
        done: list[str] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(g.app),
                                     base_url="http://gw") as c:
            flood = [asyncio.create_task(_post(c, a, done, f"a{i}")) for i in range(6)]
            await asyncio.sleep(0.2)
            assert len(g.chats) == 2  # two slots: the rest of a's wait at the gateway
            depth = g.app.state.admission.models[MODEL].queue.depths
            assert depth == {"team-a": 4}
            quiet = asyncio.create_task(_post(c, b, done, "b"))
            await asyncio.sleep(0.1)
            for _ in range(7):  # the replicas answer one at a time
                g.hold.set()
                await asyncio.sleep(0)
                g.hold.clear()
                await asyncio.sleep(0.05)
            g.hold.set()
            codes = await asyncio.gather(*flood, quiet)
        return done, codes

    done, codes = asyncio.run(go())
    assert codes == [200] * 7
    sent = [c["messages"] for c in g.chats]
    assert len(sent) == 7
    assert done.index("b") <= 3, done  # b was let in at the first free slot
    g.close()


def test_a_full_queue_and_a_long_wait_answer_429_and_503_with_retry_after(tmp_path):
    g = gateway(tmp_path, slots=1, max_queued=2, queue_timeout=0.3)
    a = key(g, "team-a")

    async def go():
        g.hold = asyncio.Event()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(g.app),
                                     base_url="http://gw") as c:
            tasks = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT, headers={
                "Authorization": f"Bearer {a}"})) for _ in range(4)]
            responses = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 5)
            g.hold.set()
            return [await tasks[0], *responses]

    first, *rest = asyncio.run(go())
    assert first.status_code == 200
    by_code = sorted(r.status_code for r in rest)
    assert by_code == [429, 503, 503], by_code
    for r in rest:
        assert r.headers["retry-after"] and r.json()["error"]["code"] in ("queue_full",
                                                                         "queue_timeout")
    metrics = g.client.get("/metrics", headers=g.cell).text
    assert 'llmcell:gateway_rate_limited_total{limit="queue_timeout",tenant="team-a"} 2.0' \
        in metrics
    assert 'llmcell:gateway_rate_limited_total{limit="queue_full",tenant="team-a"} 1.0' in metrics
    assert 'llmcell:gateway_queue_depth{tenant="team-a"} 0.0' in metrics  # none left waiting
    g.close()
