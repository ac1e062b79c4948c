"""The gateway's forwarding in process: routing, retries, failover, cooldown and failure reports,
against replicas and an admin that are `httpx.MockTransport` handlers (no processes)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from llmcell.config.gateway import GatewayConfig
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.view import CellView
from llmcell.protocol.cell import Replica, RouteView
from llmcell.protocol.errors import APIError
from llmcell.router import make_policy

MODEL = "/sax/test/m"


class Cell:
    """Replicas r0..rN-1 at http://rI; `behaviour[id]` says how each answers."""

    def __init__(self, n: int, retries: int = 2, cooldown: float = 5.0) -> None:
        self.behaviour = {f"r{i}": "ok" for i in range(n)}
        self.calls: list[str] = []
        self.reported: list[str] = []
        config = GatewayConfig(admin="http://admin", retries=retries, cooldown=cooldown)
        admin = httpx.AsyncClient(base_url="http://admin",
                                  transport=httpx.MockTransport(self._admin))
        self.view = CellView(config, admin)
        self.view.view = RouteView(1, {MODEL: [Replica(f"r{i}", f"http://r{i}")
                                               for i in range(n)]})
        replicas = httpx.AsyncClient(transport=httpx.MockTransport(self._replica))
        self.forwarder = Forwarder(self.view, make_policy("least_load"), replicas, admin,
                                   retries)

    def _admin(self, request: httpx.Request) -> httpx.Response:
        self.reported.append(request.url.path.split("/")[3])
        return httpx.Response(200, json={})

    def _replica(self, request: httpx.Request) -> httpx.Response:
        rid = request.url.host
        self.calls.append(rid)
        kind = self.behaviour[rid]
        if kind == "down":
            raise httpx.ConnectError("refused", request=request)
        if kind == "500":
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if kind == "429":
            return httpx.Response(429, json={"error": {"message": "full"}})
        if kind == "400":
            return httpx.Response(400, json={"error": {"message": "bad max_tokens"}})
        body = json.loads(request.content)
        return httpx.Response(200, json={"served_by": rid, "model": body["model"]})

    def send(self, stream: bool = False):
        async def go():
            result = await self.forwarder.send(MODEL, "/v1/chat/completions", {"model": MODEL},
                                               stream)
            await asyncio.sleep(0)  # let the failure reports run
            return result
        return asyncio.run(go())


def test_a_healthy_replica_answers_and_load_is_released():
    cell = Cell(2)
    result = cell.send()
    assert result.status == 200 and result.body["served_by"] == result.replica
    assert result.attempts == 1 and cell.view.outstanding[result.replica] == 0


def test_a_refusing_replica_fails_over_reports_and_cools_down():
    cell = Cell(2)
    cell.behaviour["r0"] = "down"
    cell.forwarder.policy = lambda replicas, route: replicas[0]  # always the first left
    result = cell.send()
    assert result.body["served_by"] == "r1" and result.attempts == 2
    assert cell.calls == ["r0", "r1"] and cell.reported == ["r0"]
    cell.calls.clear()
    cell.behaviour["r0"] = "ok"  # back, but still cooling down: r1 is preferred
    assert cell.send().replica == "r1" and cell.calls == ["r1"]


def test_5xx_is_retried_elsewhere_and_4xx_is_the_answer():
    cell = Cell(2)
    cell.behaviour.update(r0="500", r1="500")
    with pytest.raises(APIError) as e:
        cell.send()
    assert e.value.status == 503 and "2 tried" in e.value.message
    assert sorted(cell.reported) == ["r0", "r1"]
    cell = Cell(2)
    cell.behaviour.update(r0="400", r1="400")
    result = cell.send()
    assert result.status == 400 and result.attempts == 1 and cell.reported == []


def test_a_full_replica_is_skipped_without_blame():
    cell = Cell(2)
    cell.forwarder.policy = lambda replicas, route: replicas[0]
    cell.behaviour["r0"] = "429"
    result = cell.send()
    assert result.replica == "r1" and cell.reported == [] and "r0" not in cell.view.cooldown


def test_retries_are_bounded():
    cell = Cell(5, retries=1)
    cell.behaviour = {r: "down" for r in cell.behaviour}
    with pytest.raises(APIError) as e:
        cell.send()
    assert e.value.status == 503 and len(cell.calls) == 2


def test_no_replica_is_a_503_with_retry_after():
    cell = Cell(0)
    with pytest.raises(APIError) as e:
        cell.send()
    assert e.value.status == 503 and e.value.headers["Retry-After"] == "1"


class _BreaksAfterFirst(httpx.AsyncByteStream):
    async def __aiter__(self):
        yield b'data: {"id": "1"}\n\n'
        raise httpx.ReadError("replica died")


def test_a_stream_broken_mid_way_ends_with_an_error_event_and_is_marked():
    cell = Cell(1)
    cell._replica = lambda request: httpx.Response(200, stream=_BreaksAfterFirst())
    cell.forwarder.client = httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: cell._replica(request)))
    broken = []

    async def go():
        result = await cell.forwarder.send(MODEL, "/v1/chat/completions", {"model": MODEL}, True)
        result.on_broken = lambda: broken.append(True)
        chunks = [c async for c in result.stream]
        await asyncio.sleep(0)
        return chunks

    chunks = asyncio.run(go())
    assert chunks[0].startswith(b'data: {"id"') and b"failed mid-stream" in chunks[-1]
    assert broken == [True] and cell.reported == ["r0"] and cell.view.outstanding["r0"] == 0
