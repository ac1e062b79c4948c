"""The gateway's forwarding in process: routing, retries, failover, cooldown and failure reports,
against replicas behind a fake relay and an admin that is an `httpx.MockTransport` handler (no
processes; the relay itself is exercised against real servers in tests/edge/test_relay.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from llmcell.config.gateway import GatewayConfig
from llmcell.edge.relay import RelayError
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.view import CellView
from llmcell.protocol.cell import Replica, RouteView
from llmcell.protocol.errors import APIError
from llmcell.router import make_policy

MODEL = "/sax/test/m"


class FakeResponse:
    def __init__(self, status: int, body: dict | None = None, chunks=None) -> None:
        self.status, self._body, self._chunks = status, body, chunks
        self.closed = False

    async def read(self) -> bytes:
        self.closed = True
        return json.dumps(self._body).encode()

    async def chunks(self):
        for chunk in self._chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    def close(self) -> None:
        self.closed = True


class FakeRelay:
    """What `edge.relay.Relay` offers the forwarder: `post(url, body)`."""

    def __init__(self, cell: "Cell") -> None:
        self.cell = cell

    async def post(self, url: str, body: bytes) -> FakeResponse:
        return self.cell._replica(url.split("//")[1].split("/")[0], json.loads(body))


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
        self.forwarder = Forwarder(self.view, make_policy("least_load"), FakeRelay(self), admin,
                                   retries)

    def _admin(self, request: httpx.Request) -> httpx.Response:
        self.reported.append(request.url.path.split("/")[3])
        return httpx.Response(200, json={})

    def _replica(self, rid: str, body: dict) -> "FakeResponse":
        self.calls.append(rid)
        kind = self.behaviour[rid]
        if kind == "down":
            raise RelayError("ClientConnectorError: refused")
        if kind == "500":
            return FakeResponse(500, {"error": {"message": "boom"}})
        if kind == "429":
            return FakeResponse(429, {"error": {"message": "full"}})
        if kind == "400":
            return FakeResponse(400, {"error": {"message": "bad max_tokens"}})
        return FakeResponse(200, {"served_by": rid, "model": body["model"]})

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


def test_a_stream_broken_mid_way_ends_with_an_error_event_and_is_marked():
    cell = Cell(1)
    cell._replica = lambda rid, body: FakeResponse(
        200, chunks=[b'data: {"id": "1"}\n\n', RelayError("ClientPayloadError: replica died")])
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
