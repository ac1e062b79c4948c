"""Busy is not dead: a server whose last report had requests in flight gets twice the silence
before it is dropped, and a failure report whose probe times out keeps a server that still
heartbeats (only a refused or reset connection drops it at once)."""

from __future__ import annotations

import asyncio

import httpx

from llmcell.admin.cell_routes import cell_routes
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.protocol.cell import READY, ReplicaReport, ServerInfo


def registry(tmp_path) -> CellRegistry:
    return CellRegistry(ModelStore(tmp_path / "s.sqlite3"), dead_after=3.0, now=0.0)


def join(reg: CellRegistry, sid: str, running: int, now: float = 0.0) -> None:
    report = ReplicaReport("/sax/test/m", "x", "None", READY, running=running)
    reg.register(ServerInfo(sid, f"http://{sid}", memory_bytes=1 << 30), (report,), now)


def test_a_busy_server_gets_twice_the_silence(tmp_path):
    reg = registry(tmp_path)
    join(reg, "idle", 0)
    join(reg, "busy", 5)
    assert reg.tick(3.5) == ["idle"]
    assert reg.tick(5.5) == []
    assert reg.tick(6.5) == ["busy"]


def test_a_probe_that_times_out_keeps_a_server_that_heartbeats(tmp_path):
    reg = registry(tmp_path)
    join(reg, "slow", 3)
    join(reg, "gone", 0)
    clock = [0.5]

    def probe_handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "slow":
            raise httpx.ReadTimeout("busy", request=request)
        raise httpx.ConnectError("refused", request=request)

    probe = httpx.AsyncClient(transport=httpx.MockTransport(probe_handler))
    routes = {r.path: r for r in cell_routes(AdminConfig(state_path=tmp_path / "x"), reg, probe,
                                             now=lambda: clock[0])}
    endpoint = routes["/cell/servers/{server_id:path}/failed"].endpoint

    class Req:
        def __init__(self, sid): self.path_params = {"server_id": sid}

    async def report(sid):
        return await endpoint(Req(sid))

    asyncio.run(report("slow"))
    asyncio.run(report("gone"))
    assert set(reg.servers) == {"slow"}
    clock[0] = 4.0  # its heartbeats stopped too: now a timeout is taken as death
    asyncio.run(report("slow"))
    assert reg.servers == {}

