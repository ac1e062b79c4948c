"""The cell end to end with real processes: admin, model servers and the gateway on loopback."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from openai import OpenAI

from tests.cell.conftest import MODEL, SAX

pytestmark = pytest.mark.slow


def test_publish_generate_chat_unpublish_in_both_dialects(cell):
    cell.start_admin()
    cell.start_server("s0")
    cell.start_gateway()
    assert cell.sax("GET", "/").json() == {"message": "HTTP Server for SAX Client"}
    cell.publish(1)
    listed = cell.wait_active(1)
    assert listed == {"model": SAX, "model_path": MODEL, "checkpoint": "None",
                      "max_replicas": 1, "active_replicas": 1}
    assert cell.sax("GET", "/listall", {"sax_cell": "/sax/test"}).json() == [SAX]

    r = cell.sax("POST", "/generate", {"model": SAX, "query": "How many days are in a week?",
                                       "extra_inputs": {"temperature": 0.0}})
    assert r.status_code == 200, r.text
    [[text, score]] = r.json()
    assert text.strip() and isinstance(score, float) and score < 0
    v1 = cell.sax("POST", "/generate", {"model": SAX, "query": "Hi"}, v1=True).json()
    assert isinstance(v1["generate_response"][0][1], float)
    assert cell.sax("GET", "/listcell", {"model": SAX}, v1=True).json()["active_replicas"] == 1

    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused", max_retries=0)
    for name in (SAX, "smollm2"):
        out = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
            temperature=0)
        assert out.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    models = client.models.list().data
    assert [m.id for m in models] == [SAX]
    assert models[0].max_model_len == 2048  # the replicas' context window (--max-model-len)
    assert client.models.retrieve("smollm2").max_model_len == 2048
    done = client.completions.create(model="smollm2", prompt="The sky is", max_tokens=4)
    assert done.choices[0].text

    assert cell.sax("POST", "/unpublish", {"model": SAX}).json() == {"model": SAX}
    gone = cell.sax("POST", "/generate", {"model": SAX, "query": "Hi"})
    assert gone.status_code == 404 and "not published" in gone.json()["detail"]
    gone_v1 = cell.sax("POST", "/generate", {"model": SAX, "query": "Hi"}, v1=True)
    assert gone_v1.status_code == 400 and "not published" in gone_v1.json()["Error"]
    missing = cell.sax("GET", "/listcell", {"model": SAX})
    assert missing.status_code == 404 and SAX in missing.json()["detail"]


def test_bad_input_gets_clear_4xx(cell):
    cell.start_admin()
    cell.start_gateway()
    r = cell.sax("POST", "/publish", {"model": SAX, "model_path": "/no/such.gguf",
                                      "checkpoint": "None", "replicas": 1})
    assert r.status_code == 400 and "/no/such.gguf" in r.json()["detail"]
    r = cell.sax("POST", "/publish", {"model": "smollm2", "model_path": MODEL,
                                      "checkpoint": "None", "replicas": 1})
    assert r.status_code == 400 and "/sax/<cell>/<name>" in r.json()["detail"]
    r = cell.sax("POST", "/publish", {"model": SAX, "path": MODEL, "checkpoint": "None",
                                      "replicas": 1, "extra": True}, v1=True)
    assert r.status_code == 400 and "expected keys" in r.json()["Error"]
    r = cell.sax("PUT", "/update", {"model": SAX, "model_path": MODEL, "checkpoint": "None",
                                    "replicas": 1})
    assert r.status_code == 404
    r = httpx.post(cell.gateway.url + "/generate", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    big = b" " * (5 << 20)
    r = httpx.post(cell.gateway.url + "/publish", content=big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = httpx.post(cell.gateway.url + "/v1/chat/completions", content=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(Exception) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert getattr(e.value, "status_code", None) == 404
    r = httpx.post(cell.gateway.url + "/v1/chat/completions",
                   json={"model": "smollm2", "messages": [], "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


async def _burst(url: str, n: int) -> list[tuple[int, int]]:
    """(status, replicas tried) of n concurrent chats."""
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as c:
        async def one(i: int) -> tuple[int, int]:
            r = await c.post(url + "/v1/chat/completions", json={
                "model": "smollm2", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": f"Question {i}: name a colour."}]})
            return r.status_code, int(r.headers.get("x-llmcell-attempts", 0))
        return await asyncio.gather(*[one(i) for i in range(n)])


def test_kill_a_server_under_load_loses_nothing_and_restart_restores(cell):
    cell.start_admin()
    cell.start_server("s0")
    victim = cell.start_server("s1")
    cell.start_gateway()
    cell.publish(2)
    cell.wait_active(2)

    async def scenario():
        load = asyncio.create_task(_burst(cell.gateway.url, 100))
        await asyncio.sleep(1.0)
        victim.kill9()
        return await load

    results = asyncio.run(scenario())
    assert [status for status, _ in results] == [200] * 100
    assert any(attempts > 1 for _, attempts in results)  # the victim's requests moved
    deadline = time.monotonic() + 10
    while cell.listcell()["active_replicas"] != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cell.listcell()["active_replicas"] == 1
    victim.start()
    victim.wait()
    cell.wait_active(2)


def test_pending_replica_is_placed_when_a_server_joins(cell):
    cell.start_admin()
    cell.start_server("s0", memory="1GiB")  # ~0.8 GiB per replica: one each
    cell.start_server("s1", memory="1GiB")
    cell.start_gateway()
    cell.publish(3)
    assert cell.wait_active(2)["max_replicas"] == 3
    time.sleep(1.0)
    assert cell.listcell()["active_replicas"] == 2
    cell.start_server("s2", memory="1GiB")
    cell.wait_active(3)


def test_admin_restart_keeps_models_and_replicas_without_reloading(cell):
    admin = cell.start_admin()
    server = cell.start_server("s0")
    cell.start_gateway()
    cell.publish(1)
    cell.wait_active(1)
    admin.kill9()
    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(3):  # the gateway serves from its last view while the admin is down
        out = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert out.choices[0].message.content
    assert cell.sax("GET", "/listcell", {"model": SAX}).status_code == 503
    admin.start()
    admin.wait()
    cell.wait_active(1)
    time.sleep(1.5)  # past the admin's start-up grace: nothing new may be placed or loaded
    assert cell.listcell()["active_replicas"] == 1
    assert server.output().count(f"loading {SAX}") == 1


def _held(cell) -> dict[str, list[tuple[str, str]]]:
    servers = httpx.get(cell.admin.url + "/cell/servers").json()
    return {s["id"]: sorted((r["model"], r["checkpoint"]) for r in s["replicas"]) for s in servers}


def test_update_scales_and_rolls_a_checkpoint_without_losing_active_replicas(cell):
    from llmcell.engine.loader.registry import resolve_model_path

    cell.start_admin()
    for name in ("s0", "s1"):
        cell.start_server(name, memory="2GiB")  # room for two replicas each
    cell.start_gateway()
    cell.publish(1)
    cell.wait_active(1)
    body = {"model": SAX, "model_path": MODEL, "checkpoint": "None", "replicas": 2}
    assert cell.sax("PUT", "/update", body).json()["replicas"] == 2
    cell.wait_active(2)

    new = str(resolve_model_path(MODEL))  # the same weights under an explicit path
    assert cell.sax("PUT", "/update", dict(body, checkpoint=new)).status_code == 200
    lowest, deadline = 2, time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = cell.listcell()
        lowest = min(lowest, listed["active_replicas"])
        held = _held(cell)
        if all(h == [(SAX, new)] for h in held.values()) and listed["active_replicas"] == 2:
            break
        time.sleep(0.1)
    assert lowest == 2
    assert _held(cell) == {"s0": [(SAX, new)], "s1": [(SAX, new)]}
    assert cell.listcell()["checkpoint"] == new

    assert cell.sax("PUT", "/update", dict(body, checkpoint=new, replicas=1)).status_code == 200
    cell.wait_active(1)
    cell.sax("POST", "/unpublish", {"model": SAX})
    deadline = time.monotonic() + 30
    while any(_held(cell).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _held(cell) == {"s0": [], "s1": []}  # unloaded: memory freed on both servers


LONG_CHAT = {"model": SAX, "messages": [{"role": "user", "content": "Count to a thousand."}],
             "max_tokens": 1500, "ignore_eos": True}
"""About a minute of generation on the test servers' one thread."""


def _one_replica(cell):
    cell.start_admin()
    server = cell.start_server("s0")
    cell.start_gateway()
    cell.publish(1)
    cell.wait_active(1)
    return server


def _running(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmcell:num_requests_running"))


def test_a_plain_request_whose_client_leaves_is_aborted_on_the_replica(cell):
    """Without a stream the gateway used to wait for the whole answer (the replica generating
    for no one); now the client's departure closes the replica's request too."""
    server = _one_replica(cell)
    body = dict(LONG_CHAT)
    with pytest.raises(httpx.ReadTimeout):  # ~1 minute of generation on one thread
        httpx.post(cell.gateway.url + "/v1/chat/completions", json=body,
                   timeout=httpx.Timeout(10.0, read=2.0))
    deadline = time.monotonic() + 20
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(server) == 0, "the replica kept generating for a client that left"


def test_up_flags_win_over_the_saved_state(cell):
    """`llmcell up --replicas N` on a state file that already holds the model updates it (it
    used to print "N replica(s)" and keep the saved count)."""
    from llmcell.local_cell import CellPlan, LocalCell

    cell.start_admin()
    cell.start_server("s0")
    cell.start_gateway()

    def up(replicas: int) -> list[str]:
        said: list[str] = []
        plan = CellPlan(admin_port=cell.admin.port, gateway_port=cell.gateway.port,
                        model=MODEL, replicas=replicas)
        LocalCell(plan).publish(said.append)
        return said

    up(1)
    plan = CellPlan(model=MODEL)
    assert cell.listcell(plan.sax_name)["max_replicas"] == 1
    said = up(2)
    assert any("updating it to 2" in line for line in said), said
    assert cell.listcell(plan.sax_name)["max_replicas"] == 2
    assert not any("updating" in line for line in up(2))


def test_a_stream_broken_by_a_dying_replica_counts_as_a_502(cell):
    """The head said 200 before the replica died; the gateway's metrics (and so the 5xx alert)
    count the request as the 502 it became."""
    victim = _one_replica(cell)
    body = dict(LONG_CHAT, stream=True)
    lines = []
    with httpx.stream("POST", cell.gateway.url + "/v1/chat/completions", json=body,
                      timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 10:
                victim.kill9()
    assert "failed mid-stream" in lines[-1] or "failed mid-stream" in lines[-2]
    text = httpx.get(cell.gateway.url + "/metrics").text
    assert any(line.startswith("llmcell:gateway_requests_total{") and 'code="502"' in line
               and line.endswith(" 1.0") for line in text.splitlines()), text
    assert 'llmcell:gateway_errors_total{type="replica_failed"} 1.0' in text
