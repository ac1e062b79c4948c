"""Requests for a model that is getting its first ready replica (scaled to zero, or moving off a
server that left): held at the gateway instead of refused, and sent as soon as a replica is
ready, in arrival order.

While it holds requests for a model, the gateway tells the admin how many (`/cell/wake`, which
makes the autoscaler place a replica at once) and refreshes its routing view until one is ready.
Bounded per model (`max_held`; past it a 503 at once) and in time (`timeout`; then a 503 with
`Retry-After`). Streams wait the same way: nothing has been sent to the client yet.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import httpx

from llmcell.gateway.view import CellView
from llmcell.protocol.errors import APIError

POLL = 0.1
"""Seconds between looks at the routing view while requests are held."""
WAKE_EVERY = 1.0
"""Seconds between the gateway's reports of what it holds to the admin."""


class ColdStart:
    def __init__(self, view: CellView, admin: httpx.AsyncClient, max_held: int, timeout: float,
                 observe: Callable[[str, float], None] = lambda model, seconds: None) -> None:
        """`observe(model, seconds)`: a held request was sent after `seconds` (metrics)."""
        self.view = view
        self.admin = admin
        self.max_held = max_held
        self.timeout = timeout
        self.observe = observe
        self.held: dict[str, int] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._pollers: dict[str, asyncio.Task] = {}

    def applies(self, model: str) -> bool:
        return model in self.view.view.cold and not self.view.snapshot(model, set())

    async def wait(self, model: str) -> None:
        """Return once `model` has a ready replica; APIError 503 when too many requests are
        held for it already, or none became ready within the timeout."""
        held = self.held.get(model, 0)
        if held >= self.max_held:
            raise APIError(503, f"model {model} is starting and this gateway already holds "
                                f"{held} requests for it (the most it holds); retry shortly",
                           code="model_starting", headers={"Retry-After": "2"})
        self.held[model] = held + 1
        started = time.monotonic()
        ready = self._ready.setdefault(model, asyncio.Event())
        if model not in self._pollers:
            self._pollers[model] = asyncio.create_task(self._poll(model, ready))
        try:
            await asyncio.wait_for(ready.wait(), self.timeout)
        except asyncio.TimeoutError:
            raise APIError(503, f"model {model} is starting: no replica became ready within "
                                f"{self.timeout:g} s; retry shortly", code="model_starting",
                           headers={"Retry-After": "5"}) from None
        finally:
            self.held[model] -= 1
        self.observe(model, time.monotonic() - started)

    async def _poll(self, model: str, ready: asyncio.Event) -> None:
        told = 0.0
        try:
            while self.held.get(model, 0) > 0:
                if self.view.snapshot(model, set()):
                    ready.set()  # waiters resume in the order they began waiting
                    return
                if time.monotonic() - told >= WAKE_EVERY:
                    told = time.monotonic()
                    try:
                        await self.admin.post("/cell/wake", headers=self.view.headers,
                                              json={"model": model, "held": self.held[model]})
                    except httpx.HTTPError:
                        pass  # the admin is away; keep looking, the timeout bounds the wait
                await asyncio.sleep(POLL)
                await self.view.refresh()
        finally:
            del self._pollers[model]
            if self._ready.get(model) is ready:
                del self._ready[model]

    async def aclose(self) -> None:
        for task in list(self._pollers.values()):
            task.cancel()
