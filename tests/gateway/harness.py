"""A whole gateway app in process: the real admin app behind it (over `httpx.ASGITransport`,
its SQLite store in a temporary folder) and replicas that are `httpx.MockTransport` handlers
answering chat completions (and streams of them). No processes, no sockets."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.config.gateway import GatewayConfig
from llmcell.config.security import CellSecurity
from llmcell.edge.relay import RelayError
from llmcell.gateway.app import create_gateway_app

MODEL = "/sax/test/m"
SOURCE = "smollm2-135m-instruct"
USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
"""What every replica answer says it used."""


class _Response:
    def __init__(self, resp: httpx.Response) -> None:
        self.resp, self.status, self.headers = resp, resp.status_code, resp.headers

    async def read(self) -> bytes:
        try:
            return await self.resp.aread()
        finally:
            await self.resp.aclose()

    async def chunks(self):
        try:
            async for chunk in self.resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as e:
            raise RelayError(str(e)) from None

    def close(self) -> None:
        asyncio.ensure_future(self.resp.aclose())


class TransportRelay:
    """`edge.relay.Relay`'s interface over an httpx transport (in-process replicas), sending
    what the real one sends (the member's credential, JSON)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, headers: dict) -> None:
        self.client = httpx.AsyncClient(transport=transport, headers={
            "content-type": "application/json", **headers})

    async def post(self, url: str, body: bytes) -> _Response:
        try:
            return _Response(await self.client.send(
                self.client.build_request("POST", url, content=body), stream=True))
        except httpx.HTTPError as e:
            raise RelayError(str(e)) from None

    async def aclose(self) -> None:
        await self.client.aclose()


class Gateway:
    def __init__(self, tmp_path, token: str | None = None, admin_up: bool = True,
                 bootstrap: str | None = None, slots: int = 0, admin: dict | None = None,
                 **gateway) -> None:
        """`slots`: what the replicas report; `admin`: AdminConfig fields; `gateway`:
        GatewayConfig fields."""
        self.slots = slots
        self.hold: asyncio.Event | None = None
        """When set, replicas answer only once it is set (requests pile up)."""
        security = CellSecurity(token)
        self.cell = security.headers()
        config = AdminConfig(state_path=tmp_path / "admin.sqlite3", security=security,
                             bootstrap_admin_key=bootstrap, **(admin or {}))
        self.store = ModelStore(config.state_path)
        self.admin_app = create_admin_app(config, CellRegistry(self.store, config.dead_after,
                                                               time.monotonic()))
        self.admin_up = admin_up
        self.chats: list[dict] = []  # what the replicas were sent
        self.replica_headers: list[dict] = []
        self.app = create_gateway_app(
            GatewayConfig(admin="http://admin", security=security, **gateway),
            httpx.MockTransport(self._admin), httpx.MockTransport(self._replica),
            TransportRelay(httpx.MockTransport(self._replica), security.headers()))
        self.view = self.app.state.view
        self.client = TestClient(self.app)
        self.admin = TestClient(self.admin_app, headers=self.cell)  # the admin, as a member

    async def _admin(self, request: httpx.Request) -> httpx.Response:
        if not self.admin_up:
            raise httpx.ConnectError("refused", request=request)
        transport = httpx.ASGITransport(self.admin_app)
        return await transport.handle_async_request(request)

    async def _replica(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.chats.append(body)
        self.replica_headers.append(dict(request.headers))
        if self.hold is not None:
            await self.hold.wait()
        if body.get("stream"):
            return httpx.Response(200, stream=httpx.ByteStream(self._events(body)),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"choices": [{
            "index": 0, "message": {"role": "assistant", "content": "Paris"},
            "logprobs": {"content": [{"token": "Par", "logprob": -0.5},
                                     {"token": "is", "logprob": -0.25}]},
            "finish_reason": "stop"}], "usage": USAGE})

    @staticmethod
    def _events(body: dict) -> bytes:
        usage = (body.get("stream_options") or {}).get("include_usage")
        chunks = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
                  for t in ("Par", "is")]
        if usage:
            chunks = [dict(c, usage=None) for c in chunks]
            chunks.append({"choices": [], "usage": USAGE})
        return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
            b"data: [DONE]\n\n"

    def refresh(self) -> None:
        asyncio.run(self.view.refresh())  # the gateway follows the admin's routes and keys

    def publish(self, model: str = MODEL) -> None:
        r = self.admin.post("/models", json={"model": model, "model_path": SOURCE,
                                             "checkpoint": "None", "replicas": 1})
        assert r.status_code == 200, r.text

    def serve(self) -> None:
        """A server joins the admin and reports its replicas ready at http://r0."""
        self.admin.post("/cell/servers", json={"server": {
            "id": "r0", "address": "http://r0", "engine": "builtin", "memory_bytes": 8 << 30,
            "group_size": 1, "models": ["*"]}}).raise_for_status()
        assigned = self.admin.post("/cell/servers/r0/heartbeat", json={"replicas": []}).json()
        ready = [dict(a, state="ready", error="", running=0, waiting=0, slots=self.slots)
                 for a in assigned["assignments"]]
        self.admin.post("/cell/servers/r0/heartbeat",
                        json={"replicas": ready}).raise_for_status()
        self.refresh()

    def close(self) -> None:
        self.store.close()
