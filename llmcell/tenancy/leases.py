"""The admin's side of global quotas: it shares each budget among the gateways as leases and
rebalances them from what each gateway reports (every `lease_interval`, about a second).

Pure code over the reports; the admin calls `exchange` for each report, one at a time.

The invariant: the leases of a budget never add up to more than its limit, so the limit holds
whichever gateways clients reach.
- A gateway admits only within the lease it holds.
- The admin counts, for each gateway, the larger of the lease it last granted and the one the
  gateway last said it enforces, until the gateway's next report confirms the new one. A lease
  that shrinks frees budget for the others only once its gateway applied it.
- What is left of the budget (the limit less what every gateway admitted) is shared in
  proportion to each live gateway's demand since its last report, plus one, so a quiet gateway
  keeps a little, a live one that has not used the budget yet too (rounded up for a gateway that
  was asked: the clamp to what the others do not hold keeps the sum within the limit). A client
  that moves to another gateway finds a lease there.

Windows are counted on the admin's monotonic clock, so a wall-clock jump moves no window. A
gateway learns the window and how long it has left from each reply. At a window's end the
gateways' admitted counts restart at zero and each keeps its lease's size until its next report.
The admin counts them the same way, so a new window starts within the limit.

A gateway that stops reporting (it died, or lost the admin) keeps its admitted count for the
window, but after `lease_ttl` its unused lease returns to the pool. Its concurrent requests are
then counted as ended.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from llmcell.protocol.tenancy import WINDOWED, Budget, Grant, LeaseReply, Usage


@dataclass
class _Held:
    window: int
    used: int
    granted: int
    demand: int


class LeaseBook:
    def __init__(self, window_seconds: float = 60.0, lease_ttl: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_seconds <= 0:
            raise ValueError(f"quota window={window_seconds} must be > 0 seconds")
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl={lease_ttl} must be > 0 seconds")
        self.window_seconds = window_seconds
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.origin = clock()
        self.latest = 0
        self.held: dict[tuple[str, str], dict[str, _Held]] = {}
        self.seen: dict[str, float] = {}
        """Gateways by when they last reported."""

    def window(self, now: float) -> int:
        """The current window: never earlier than one already seen, whatever the clock does."""
        self.latest = max(self.latest, int((now - self.origin) // self.window_seconds))
        return self.latest

    def live(self, now: float) -> list[str]:
        return [g for g, seen in self.seen.items() if now - seen <= self.lease_ttl]

    def exchange(self, gateway: str, usages: list[Usage], budgets: dict[tuple[str, str], Budget],
                 ) -> LeaseReply:
        """A gateway's report in, its leases out. `budgets`: every budget the cell's keys and
        tenants set now (by (subject, resource)); a usage of a budget no longer set gets no
        grant, and the gateway stops enforcing it."""
        now = self.clock()
        window = self.window(now)
        self.seen[gateway] = now
        live = set(self.live(now))
        grants = []
        for u in usages:
            budget = budgets.get((u.subject, u.resource))
            if budget is None:
                self.held.pop((u.subject, u.resource), None)
                continue
            held = self.held.setdefault(budget.name, {})
            held[gateway] = _Held(min(u.window, window), u.used, u.granted, u.demand)
            grant = self._grant(budget, gateway, held, window, live)
            held[gateway].granted = max(u.granted, grant.granted)
            grants.append(grant)
        self._forget(now, window)
        ends = self.origin + (window + 1) * self.window_seconds
        return LeaseReply(window, self.window_seconds, max(0.0, ends - now), len(live),
                          tuple(grants))

    def _grant(self, budget: Budget, gateway: str, held: dict[str, _Held], window: int,
               live: set[str]) -> Grant:
        windowed = budget.resource in WINDOWED
        used, holds, weights = {}, {}, {}
        for g, h in held.items():
            current = not windowed or h.window == window
            carried = windowed and h.window == window - 1
            used[g] = h.used if current else 0
            if g in live:
                holds[g] = max(h.granted, used[g]) if current else h.granted if carried else 0
                weights[g] = h.demand + 1
            else:  # its lease is void; what it admitted this window stands
                holds[g] = used[g] if windowed else 0
        for g in live - held.keys():
            weights[g] = 1
        pool = max(0, budget.limit - sum(used.values()))
        others = sum(v for g, v in holds.items() if g != gateway)
        share = pool * weights[gateway] / sum(weights.values())
        share = math.ceil(share) if held[gateway].demand else math.floor(share)
        granted = max(0, min(used[gateway] + share, budget.limit - others))
        return Grant(budget.subject, budget.resource, budget.limit, granted, pool)

    def _forget(self, now: float, window: int) -> None:
        """Drop what can no longer count: gateways long gone, entries of windows past."""
        for name, held in list(self.held.items()):
            for g, h in list(held.items()):
                gone = now - self.seen.get(g, -math.inf) > self.lease_ttl
                if gone and (name[1] not in WINDOWED or h.window < window):
                    del held[g]
            if not held:
                del self.held[name]
        for g in [g for g, seen in self.seen.items() if now - seen > 10 * self.lease_ttl]:
            del self.seen[g]
