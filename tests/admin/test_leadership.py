"""Leader election among admins sharing a real PostgreSQL: one leads, a standby takes over when
the lease runs out, the deposed leader's writes are refused by fencing (not by clocks), a
standby answers reads and points the rest at the leader, and members move to the leader by
themselves (edge/admin_client.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.database import Database, Fenced
from llmcell.admin.leadership import Leadership
from llmcell.admin.placement import ModelSpec
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.config.security import CellSecurity
from llmcell.edge.admin_client import admin_client

LEASE = 0.6


def test_one_leads_a_standby_takes_over_and_the_old_leader_is_fenced(postgres):
    url = postgres.fresh_database()
    a_db, b_db = Database.open(url), Database.open(url)
    a_store, b_store = ModelStore(a_db), ModelStore(b_db)
    a, b = Leadership(a_db, "http://a", LEASE), Leadership(b_db, "http://b", LEASE)
    assert a.is_leader and not b.is_leader and b.leader == "http://a"
    a_store.put(ModelSpec("/sax/test/m", "x", "None", 1, 1))
    with pytest.raises(Fenced):  # a standby writes nothing
        b_store.put(ModelSpec("/sax/test/n", "x", "None", 1, 1))
    assert b.step() is False  # the lease is still a's
    time.sleep(LEASE + 0.2)  # a is paused (SIGSTOP): it renews nothing
    assert b.step() is True and b_db.token == a_db.token + 1
    assert a.is_leader  # a still believes it leads: it has not looked since it woke
    with pytest.raises(Fenced, match="taken over"):
        a_store.put(ModelSpec("/sax/test/m", "stale", "None", 9, 9))
    assert b_store.get("/sax/test/m").model_path == "x"  # the state stays the new leader's
    assert a.step() is False and a.leader == "http://b"  # a stands by now
    b_store.put(ModelSpec("/sax/test/o", "y", "None", 1, 1))
    assert [m.model for m in a_store.all()] == ["/sax/test/m", "/sax/test/o"]


def test_a_standby_answers_reads_and_points_the_rest_at_the_leader(postgres, tmp_path):
    url = postgres.fresh_database()
    token = "s" * 43
    apps = []
    for name in ("a", "b"):
        config = AdminConfig(state_path=tmp_path / f"{name}.sqlite3", state_url=url,
                             advertise=f"http://{name}:10000", security=CellSecurity(token))
        store = ModelStore(config.state)
        apps.append(TestClient(create_admin_app(config, CellRegistry(
            store, config.dead_after, time.monotonic())),
            headers={"Authorization": f"Bearer {token}"}))
    leader, standby = apps
    assert leader.get("/ready").status_code == 200
    r = standby.get("/ready")
    assert r.status_code == 503 and r.json() == {"status": "standby", "leader": "http://a:10000"}
    made = leader.post("/keys", json={"tenant": "t", "role": "user"})
    assert made.status_code == 200, made.text
    assert [k["tenant"] for k in standby.get("/keys").json()] == ["t"]  # read from the database
    for method, path in [("POST", "/models"), ("GET", "/cell/routes"), ("POST", "/keys")]:
        r = standby.request(method, path, json={})
        assert r.status_code == 503 and r.headers["x-llmcell-leader"] == "http://a:10000", path


def test_members_follow_the_leader_through_several_admin_urls():
    calls: list[str] = []
    state = {"leader": "b", "up": {"a", "b", "c"}}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        calls.append(host)
        if host not in state["up"]:
            raise httpx.ConnectError("refused", request=request)
        if host != state["leader"]:
            return httpx.Response(503, json={"detail": "standby"},
                                  headers={"X-Llmcell-Leader": f"http://{state['leader']}"})
        return httpx.Response(200, json={"from": host, "body": request.content.decode()})

    async def scenario():
        client = admin_client(CellSecurity(), "http://a,http://b,http://c", 5.0,
                              httpx.MockTransport(handler))
        r = await client.post("/cell/servers", json={"x": 1})  # a points at b; the body again
        assert r.json() == {"from": "b", "body": '{"x":1}'} and calls == ["a", "b"]
        state["up"].discard("b")
        state["leader"] = "c"  # b died; c took over
        calls.clear()
        r = await client.get("/cell/routes")
        assert r.json()["from"] == "c" and calls == ["b", "c"]
        calls.clear()
        await client.get("/cell/routes")
        assert calls == ["c"]  # it stays with the leader it found
        await client.aclose()

    asyncio.run(scenario())
