"""Forward one request to a model's replicas with failover.

A replica is chosen by the routing policy. When it refuses the connection, answers 5xx, or fails
before the first byte, the request goes to another replica (at most `retries` more) and the
failure is reported to the admin, which checks the server at once. A 429 or a 404 (the replica is
full, or just unloaded the model) moves on without blaming the server. A stream that already sent
bytes ends here with an OpenAI-shaped error event; gateway/resume.py takes that up and continues
the answer on another replica.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Mapping

import httpx

from llmcell.edge.relay import Relay, RelayBusy, RelayError, RelayResponse
from llmcell.gateway.cold_start import ColdStart
from llmcell.gateway.view import CellView
from llmcell.protocol.errors import APIError
from llmcell.protocol.cell import Replica
from llmcell.router import Policy, RouteRequest

RETRY_QUIETLY = (404, 429)


@dataclass
class Forwarded:
    status: int
    body: dict | list | None = None
    stream: AsyncIterator[bytes] | None = None
    replica: str = ""
    attempts: int = 1
    raw: bytes | None = None
    """A non-streamed answer's bytes as the replica sent them (relayed without re-encoding)."""
    on_broken: Callable[[], None] = lambda: None
    """Called when the replica fails mid-stream (the client's status was already 200): the
    route marks the request so that metrics count it as an error."""


class Forwarder:
    def __init__(self, view: CellView, policy: Policy, relay: Relay,
                 admin: httpx.AsyncClient, retries: int,
                 on_route: Callable[[str, str, int], None] = lambda model, replica, attempt: None,
                 cold: ColdStart | None = None) -> None:
        """`cold`: where requests wait for a model getting its first replica (None: refused)."""
        self.cold = cold
        self.on_route = on_route
        """Told (model, replica, attempt) for every replica chosen: metrics count them."""
        self.view = view
        self.policy = policy
        self.relay = relay
        """The request path's client (edge/relay.py)."""
        self.admin = admin
        self.retries = retries
        self.seq = 0
        self._reports: set[asyncio.Task] = set()

    def _report(self, replica: Replica) -> None:
        self.view.failed(replica.server_id)

        async def tell() -> None:
            try:
                await self.admin.post(f"/cell/servers/{replica.server_id}/failed")
            except httpx.HTTPError:
                pass  # the admin is down; its heartbeat timeout will notice

        task = asyncio.create_task(tell())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def send(self, model: str, path: str, body: dict, stream: bool,
                   prefix_key: int | None = None, exclude: frozenset[str] = frozenset(),
                   cached: Mapping[str, int] | None = None) -> Forwarded:
        """`exclude`: replicas not to try (one that just failed this request mid-stream);
        `cached`: how much of the prompt each replica caches (kv_affinity)."""
        self.seq += 1
        if self.cold is not None and not exclude and self.cold.applies(model):
            await self.cold.wait(model)
        route = RouteRequest(self.seq, prefix_key, cached)
        tried: set[str] = set()
        last = "no replica answered"
        for attempt in range(1, self.retries + 2):
            replicas = self.view.snapshot(model, tried | exclude)
            if not replicas:
                break
            replica = self.policy(replicas, route)
            self.on_route(model, replica.server_id, attempt)
            tried.add(replica.server_id)
            self.view.begin(replica.server_id)
            handed_off = False
            try:
                result = await self._try(replica, path, body, stream)
                if isinstance(result, Forwarded):
                    result.replica, result.attempts = replica.server_id, attempt
                    if result.stream is not None:
                        result.stream = self._release(result.stream, replica.server_id)
                        handed_off = True
                    return result
                last = result
            finally:
                if not handed_off:
                    self.view.end(replica.server_id)
        if not tried:
            total = len(self.view.view.models.get(model, []))
            raise APIError(503, f"model {model} has no active replica right now "
                                f"({total} serving); retry shortly",
                           code="no_active_replica", headers={"Retry-After": "1"})
        raise APIError(503, f"every replica tried for {model} failed ({len(tried)} tried); "
                            f"last error: {last}", code="replicas_failed",
                       headers={"Retry-After": "1"})

    async def _try(self, replica: Replica, path: str, body: dict,
                   stream: bool) -> Forwarded | str:
        """A `Forwarded` to return to the client, or the reason to try another replica."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            resp = await self.relay.post(replica.address + path, data)
        except RelayBusy as e:  # the gateway's own ceiling: no other replica would do
            raise APIError(429, f"this gateway is at its replica_connections ceiling ({e}); "
                                "retry shortly", code="gateway_busy",
                           headers={"Retry-After": "1"}) from None
        except RelayError as e:
            self._report(replica)
            return f"{replica.server_id}: {e}"
        try:
            if resp.status != 200 or not stream:
                data = await resp.read()
                if resp.status >= 500 or resp.status in RETRY_QUIETLY:
                    if resp.status >= 500:
                        self._report(replica)
                    return f"{replica.server_id}: HTTP {resp.status}: {data[:200]!r}"
                return Forwarded(resp.status, json.loads(data), raw=data)
            chunks = aiter(resp.chunks())
            first = await anext(chunks)
        except (RelayError, StopAsyncIteration, ValueError) as e:
            resp.close()
            self._report(replica)
            return f"{replica.server_id}: failed before the first byte: {e}"
        forwarded = Forwarded(200)
        forwarded.stream = self._relay(first, chunks, resp, replica, forwarded)
        return forwarded

    async def _relay(self, first: bytes, chunks: AsyncIterator[bytes], resp: RelayResponse,
                     replica: Replica, forwarded: Forwarded) -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except RelayError as e:
            self._report(replica)
            forwarded.on_broken()
            err = APIError(502, f"replica {replica.server_id} failed mid-stream ({type(e).__name__}); "
                                "the answer is incomplete, retry the request",
                           code="replica_failed")
            yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
        finally:
            await chunks.aclose()
            resp.close()

    async def _release(self, stream: AsyncIterator[bytes], server_id: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.view.end(server_id)
