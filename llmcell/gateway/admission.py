"""Admission at the gateway, before a request is forwarded: the caller's quotas, then a slot.

1. **Quotas.** The request is charged to the caller's key and tenant budgets
   (tenancy/ledger.py). Over one, it gets a 429 with `Retry-After`. Every answer carries
   OpenAI's `x-ratelimit-*` headers. The leases behind the budgets come from the admin: every
   `lease_interval` the gateway reports what it admitted and gets its new leases. A budget it
   has not seen yet is asked for at once.
2. **A slot.** A model has as many slots here as its replicas run requests at once, shared
   among the live gateways. While they are all taken, requests wait in a fair queue
   (tenancy/fair_queue.py), by priority band (the `x-llmcell-priority` header, lowered to the
   key's ceiling) and by tenant. A tenant with too many waiting gets 429; a wait past
   `queue_timeout` gets 503. Both carry `Retry-After`.

`enter` returns a `Pass`: the headers to answer with, and `release(tokens)` to call once when
the request ends (with its token usage where known).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
from starlette.requests import Request

from llmcell.config.gateway import GatewayConfig
from llmcell.edge.auth import Principal, principal_of
from llmcell.gateway.view import CellView
from llmcell.metrics.gateway import GatewayMetrics
from llmcell.protocol.errors import APIError
from llmcell.protocol.tenancy import BANDS, PRIORITY_HEADER, Budget, LeaseReply, band_of, budgets_of
from llmcell.tenancy.fair_queue import FairQueue, Slots, Waiter
from llmcell.tenancy.ledger import Ledger, Refusal, Ticket

ANONYMOUS = "anonymous"
"""The tenant of requests without a key (auth off)."""
FIRST_LEASE_WAIT = 2.0
"""Seconds a request waits for the admin's first lease of a budget; then the even share."""
LEASE_WAIT = 2.0
"""Seconds at most a request waits, when this gateway's lease is spent but the cell's budget is
not (another gateway holds what is left), for the leases to move its way: a client under its
limit gets no 429 for the gateway it reached."""


def _nothing() -> None:
    pass


@dataclass
class Pass:
    headers: dict[str, str]
    release: Callable[[int | None], None]
    counts_tokens: bool = False
    """A token quota applies: the answer's usage is needed to settle it."""
    band: str = "interactive"

    @property
    def priority(self) -> int:
        """The engines' priority for the band (lower first)."""
        return BANDS.index(self.band)


@dataclass
class _Model:
    queue: FairQueue
    slots: Slots = field(default_factory=Slots)


class Admission:
    def __init__(self, config: GatewayConfig, view: CellView, admin: httpx.AsyncClient,
                 metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.view = view
        self.admin = admin
        self.metrics = metrics
        self.clock = clock
        self.ledger = Ledger()
        self.models: dict[str, _Model] = {}
        self._exchanging: asyncio.Task | None = None

    # ---- leases --------------------------------------------------------------------------------
    def budgets(self, principal: Principal | None) -> list[Budget]:
        if principal is None or principal.cell or principal.record is None:
            return []
        found = budgets_of(f"key:{principal.key_id}", principal.record)
        tenant = self.view.tenants.get(principal.tenant)
        if tenant is not None:
            found += budgets_of(f"tenant:{tenant.name}", tenant)
        return found

    def exchange(self) -> asyncio.Task:
        """Report and take the new leases; one exchange at a time (callers share it)."""
        if self._exchanging is None or self._exchanging.done():
            self._exchanging = asyncio.ensure_future(self._exchange())
        return self._exchanging

    async def _exchange(self) -> None:
        sent = self.ledger.report(self.clock())
        try:
            r = await self.admin.post("/cell/leases", json={
                "gateway": self.config.advertised, "usages": [u.__dict__ for u in sent]})
            r.raise_for_status()
            reply = LeaseReply.from_json(r.json())
        except (httpx.HTTPError, ValueError):
            return  # the last leases hold
        self.ledger.apply(reply, self.clock(), sent)
        for model in list(self.models):
            self._dispatch(model)  # the number of gateways, so the slots, may have moved
        await self._report_queued()

    async def _report_queued(self) -> None:
        """Tell the admin how many requests wait here for a slot of each model: demand its
        replicas do not see (the autoscaler counts them as waiting)."""
        for model, m in list(self.models.items()):
            if len(m.queue):
                try:
                    await self.admin.post("/cell/wake", headers=self.view.headers,
                                          json={"model": model, "held": len(m.queue)})
                except httpx.HTTPError:
                    return

    async def _first_lease(self, budgets: list[Budget]) -> None:
        """Wait for the admin's first lease of budgets new here, up to `FIRST_LEASE_WAIT` after
        the first request that asked (an exchange already under way was sent without them: then
        one more)."""
        for _ in range(2):
            since = self.ledger.unleased_since(budgets)
            left = since + FIRST_LEASE_WAIT - self.clock() if since is not None else 0
            if left <= 0:
                return
            try:
                await asyncio.wait_for(asyncio.shield(self.exchange()), left)
            except asyncio.TimeoutError:
                return

    async def follow(self) -> None:
        while True:
            await asyncio.shield(self.exchange())
            await asyncio.sleep(self.config.lease_interval)

    # ---- admission -----------------------------------------------------------------------------
    async def enter(self, request: Request, model: str, tokens: int, slot: bool = True) -> Pass:
        """`slot`: the request needs a replica's slot (False: answered from the gateway's cache,
        it only counts against the quotas)."""
        principal = principal_of(request)
        try:
            band = band_of(request.headers.get(PRIORITY_HEADER),
                           principal.record.max_priority if principal and principal.record
                           else None)
        except ValueError as e:
            raise APIError(400, str(e), param=PRIORITY_HEADER, code="invalid_value") from None
        tenant = principal.tenant if principal is not None else ANONYMOUS
        budgets = self.budgets(principal)
        costs = {"requests": 1, "tokens": tokens, "concurrent": 1}
        if budgets:
            self.ledger.missing(budgets, costs, self.clock())
            await self._first_lease(budgets)
        now = self.clock()
        decision = self.ledger.admit(budgets, costs, now)
        deadline = now + LEASE_WAIT
        while isinstance(decision, Refusal) and decision.soon and self.clock() < deadline:
            await asyncio.sleep(self.config.lease_interval / 2)  # the leases move meanwhile
            now = self.clock()
            decision = self.ledger.admit(budgets, costs, now)
        headers = self.ledger.headers(budgets, now)
        if isinstance(decision, Refusal):
            self.metrics.refused.labels(tenant, decision.resource).inc()
            if decision.retry_after is not None:
                headers["Retry-After"] = str(decision.retry_after)
            raise APIError(decision.status, decision.message, code=decision.code,
                           headers=headers)
        try:
            give_back = await self._slot(model, tenant, band, tokens) if slot else _nothing
        except BaseException as e:
            self.ledger.refund(decision)
            if isinstance(e, APIError):
                e.headers = {**headers, **e.headers}
            raise
        return Pass(headers, self._releaser(decision, give_back),
                    any(b.resource == "tokens" for b in budgets), band)

    def _releaser(self, ticket: Ticket, give_back: Callable[[], None]
                  ) -> Callable[[int | None], None]:
        def release(tokens: int | None) -> None:
            if ticket.open:
                self.ledger.settle(ticket, tokens)
                give_back()
        return release

    # ---- slots ---------------------------------------------------------------------------------
    def capacity(self, model: str) -> int | None:
        """This gateway's slots for `model`; None where a replica's are unknown (never full)."""
        replicas = self.view.view.models.get(model, [])
        slots = [r.slots or self.config.replica_slots for r in replicas]
        if not slots or not all(slots):
            return None
        return max(1, math.ceil(sum(slots) / self.ledger.gateways))

    async def _slot(self, model: str, tenant: str, band: str, cost: int) -> Callable[[], None]:
        if self.config.queueing == "off":
            return lambda: None
        m = self.models.get(model)
        if m is None:
            m = self.models[model] = _Model(FairQueue(self.config.max_queued))
        now = self.clock()
        m.slots.seen(tenant, now)
        if not len(m.queue) and m.slots.eligible(tenant, self.capacity(model), now):
            m.slots.take(tenant)
            return self._giver(model, tenant)
        ready = asyncio.get_running_loop().create_future()
        waiter = Waiter(tenant, band, max(1, cost), now, ready)
        weight = self.view.tenants[tenant].weight if tenant in self.view.tenants else 1.0
        if not m.queue.push(waiter, weight):
            self.metrics.refused.labels(tenant, "queue_full").inc()
            raise APIError(429, f"the tenant {tenant} already has {self.config.max_queued} "
                                f"requests waiting for {model}; retry when some have run",
                           code="queue_full", headers={"Retry-After": "1"})
        self._depth(m, tenant)
        self._dispatch(model)
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.queue_timeout)
        except asyncio.CancelledError:  # the client left
            if not m.queue.remove(waiter):  # it got its slot just now: hand it back
                self._giver(model, tenant)()
            self._depth(m, tenant)
            raise
        except asyncio.TimeoutError:
            if not m.queue.remove(waiter):  # it got its slot just now
                return self._giver(model, tenant)
            self._depth(m, tenant)
            self.metrics.refused.labels(tenant, "queue_timeout").inc()
            raise APIError(503, f"{model} stayed full for {self.config.queue_timeout:g}s while "
                                "this request waited for a slot; retry shortly",
                           code="queue_timeout", headers={"Retry-After": "2"}) from None
        self.metrics.queue_wait.labels(tenant).observe(self.clock() - now)
        return self._giver(model, tenant)

    def _giver(self, model: str, tenant: str) -> Callable[[], None]:
        def give() -> None:
            self.models[model].slots.give(tenant)
            self._dispatch(model)
        return give

    def _dispatch(self, model: str) -> None:
        """Hand free slots to waiters, fairly."""
        m = self.models[model]
        capacity, now = self.capacity(model), self.clock()
        while len(m.queue):
            w = m.queue.pop(lambda tenant: m.slots.eligible(tenant, capacity, now))
            if w is None:
                return
            m.slots.take(w.tenant)
            self._depth(m, w.tenant)
            w.payload.set_result(None)

    def _depth(self, m: _Model, tenant: str) -> None:
        self.metrics.queue_depth.labels(tenant).set(
            sum(x.queue.depths.get(tenant, 0) for x in self.models.values()))
