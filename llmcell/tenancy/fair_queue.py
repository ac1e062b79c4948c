"""Fair queuing between tenants, for when a model's replicas are full: which waiting request
goes next. Pure code; the gateway's admission holds the waiters.

- **Bands first.** Every `interactive` request goes before any `batch` one.
- **Within a band, start-time fair queuing** (Goyal, Vin, Cheng 1996) over tokens. A request
  of tenant t with cost c (its reserved tokens) gets the start tag S = max(V, F_t). Then
  F_t = S + c / weight_t, and the waiting head with the smallest tag goes next, with V set to
  its tag. A tenant with twice the weight gets twice the tokens while both wait. A tenant that
  was quiet does not bank credit: it starts at the virtual time of now.
- **Slots** (`Slots`): a model's capacity at this gateway is the sum of its replicas' batch
  slots, shared among the gateways. A request goes when a slot is free. While another tenant was
  active in the last `recent` seconds and has nothing in flight, one slot is kept free for it
  (at most half of them in all). A tenant that sends one request at a time then finds a slot at
  once instead of waiting behind a flood. This costs a flooding tenant one slot per other
  active tenant, and only while they are active.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from llmcell.protocol.tenancy import BANDS


@dataclass
class Waiter:
    tenant: str
    band: str
    cost: float
    since: float
    payload: Any = None
    seq: int = 0
    start: float = 0.0
    """Its start tag (set when queued)."""


@dataclass
class _Band:
    vtime: float = 0.0
    finish: dict[str, float] = field(default_factory=dict)
    queues: dict[str, deque[Waiter]] = field(default_factory=dict)

    def push(self, w: Waiter, weight: float) -> None:
        w.start = max(self.vtime, self.finish.get(w.tenant, 0.0))
        self.finish[w.tenant] = w.start + w.cost / weight
        self.queues.setdefault(w.tenant, deque()).append(w)

    def pop(self, eligible: Callable[[str], bool]) -> Waiter | None:
        heads = [q[0] for t, q in self.queues.items() if eligible(t)]
        if not heads:
            return None
        w = min(heads, key=lambda h: (h.start, h.seq))
        self._drop(w)
        self.vtime = max(self.vtime, w.start)
        return w

    def _drop(self, w: Waiter) -> None:
        q = self.queues[w.tenant]
        q.remove(w)
        if not q:
            del self.queues[w.tenant]
            if self.finish.get(w.tenant, 0.0) <= self.vtime:
                self.finish.pop(w.tenant, None)


class FairQueue:
    def __init__(self, max_per_tenant: int = 256) -> None:
        if max_per_tenant < 1:
            raise ValueError(f"max_queued={max_per_tenant} must be >= 1")
        self.max_per_tenant = max_per_tenant
        self.bands = {b: _Band() for b in BANDS}
        self.depths: dict[str, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(self.depths.values())

    def push(self, w: Waiter, weight: float = 1.0) -> bool:
        """Queue `w`; False when its tenant already has `max_per_tenant` waiting."""
        if weight <= 0:
            raise ValueError(f"weight={weight} must be > 0")
        if self.depths.get(w.tenant, 0) >= self.max_per_tenant:
            return False
        w.seq = next(self._seq)
        self.bands[w.band].push(w, weight)
        self.depths[w.tenant] = self.depths.get(w.tenant, 0) + 1
        return True

    def pop(self, eligible: Callable[[str], bool] = lambda tenant: True) -> Waiter | None:
        """The next waiter whose tenant is `eligible`, by band then start tag."""
        for band in BANDS:
            w = self.bands[band].pop(eligible)
            if w is not None:
                self._count_out(w)
                return w
        return None

    def remove(self, w: Waiter) -> bool:
        """Take out a waiter that gave up (timed out, client gone); False if it already left."""
        q = self.bands[w.band].queues.get(w.tenant)
        if q is None or w not in q:
            return False
        self.bands[w.band]._drop(w)
        self._count_out(w)
        return True

    def _count_out(self, w: Waiter) -> None:
        self.depths[w.tenant] -= 1
        if not self.depths[w.tenant]:
            del self.depths[w.tenant]


class Slots:
    """A model's slots at this gateway: who holds them, who was active lately."""

    def __init__(self, recent: float = 10.0) -> None:
        self.recent = recent
        self.held: dict[str, int] = {}
        self.active: dict[str, float] = {}
        """Tenants by when they last asked for a slot."""

    @property
    def in_flight(self) -> int:
        return sum(self.held.values())

    def seen(self, tenant: str, now: float) -> None:
        self.active[tenant] = now
        for t in [t for t, at in self.active.items() if now - at > self.recent]:
            del self.active[t]

    def eligible(self, tenant: str, capacity: int | None, now: float) -> bool:
        """May `tenant` take a slot now? `capacity` None: unknown, never full."""
        if capacity is None:
            return True
        if self.in_flight >= capacity:
            return False
        waiting_for_one = sum(1 for t, at in self.active.items() if t != tenant
                              and now - at <= self.recent and not self.held.get(t))
        keep = min(waiting_for_one, capacity // 2)
        return self.in_flight < capacity - keep

    def take(self, tenant: str) -> None:
        self.held[tenant] = self.held.get(tenant, 0) + 1

    def give(self, tenant: str) -> None:
        n = self.held.get(tenant, 0) - 1
        if n > 0:
            self.held[tenant] = n
        else:
            self.held.pop(tenant, None)
