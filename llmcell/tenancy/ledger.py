"""A gateway's side of global quotas: the leases it holds, what it admitted under each, and the
decision for each request. Pure code with the clock passed in; the gateway's admission
(gateway/admission.py) exchanges reports for leases with the admin (tenancy/leases.py).

A request is charged to every budget that applies to it: one request, its reserved tokens
(the prompt's estimate plus `max_tokens`), one concurrent slot. It is admitted only if every
budget has room within this gateway's lease. When it ends, the tokens are settled to what it
really used, and the concurrent slot is freed.
- Over a lease while the cell still has budget: the request may wait for the leases to move
  (`Refusal.soon`), then 429 with a retry in about a lease interval.
- Over the limit itself: 429 until the window resets.
- A reservation larger than the limit alone: 429 that says so, with no retry.

Before the admin has answered for a budget, a gateway enforces an even share of it, the limit
over the gateways it last heard of. When the admin is away, the last lease holds, window after
window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmcell.protocol.tenancy import WINDOWED, Budget, LeaseReply, Usage

RETRY_SOON = 1
"""Seconds to wait when this gateway's lease is spent but the cell's budget is not."""


@dataclass
class Share:
    budget: Budget
    window: int
    granted: int
    used: int = 0
    demand: int = 0
    pool: int = 0
    """The cell's remaining budget at the last exchange."""
    used_then: int = 0
    """`used` at the last exchange (remaining = pool - what was admitted since)."""
    leased: bool = False
    """The admin answered for it (until then: the even share)."""
    since: float = 0.0
    """When this gateway first saw the budget."""

    def remaining(self) -> int:
        return max(0, min(self.budget.limit, self.pool - (self.used - self.used_then)))


@dataclass
class Refusal:
    status: int
    message: str
    code: str
    retry_after: int | None
    resource: str
    soon: bool = False
    """This gateway's lease is spent but the cell's budget is not: the next leases may admit
    it."""


@dataclass
class Ticket:
    """An admitted request's charges, settled once when it ends."""

    charges: list[tuple[Share, int]] = field(default_factory=list)
    window: int = 0
    """The window it was admitted in (charges to a window that ended stay there)."""
    open: bool = True


class Ledger:
    def __init__(self, window_seconds: float = 60.0) -> None:
        self.shares: dict[tuple[str, str], Share] = {}
        self.window = 0
        self.window_seconds = window_seconds
        self.window_end: float | None = None
        """When the window ends, on this gateway's monotonic clock (None: not yet told)."""
        self.gateways = 1

    # ---- windows -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Roll windows that ended: what was admitted restarts at zero, each lease keeps its
        size."""
        if self.window_end is None:
            self.window_end = now + self.window_seconds
        while now >= self.window_end:
            self.window += 1
            self.window_end += self.window_seconds
            for s in self.shares.values():
                if s.budget.resource in WINDOWED:
                    s.window, s.used, s.used_then, s.pool = self.window, 0, 0, s.budget.limit

    def resets_in(self, now: float) -> float:
        self.tick(now)
        return max(0.0, self.window_end - now)

    # ---- leases --------------------------------------------------------------------------------
    def missing(self, budgets: list[Budget], costs: dict[str, int], now: float) -> list[Budget]:
        """Budgets this gateway held no lease for: each gets the even share, and is in the next
        report with the request's `costs` as its demand (ask the admin before admitting)."""
        new = [b for b in budgets if b.name not in self.shares]
        for b in new:
            self.share(b, now).demand = costs.get(b.resource, 0)
        return new

    def unleased_since(self, budgets: list[Budget]) -> float | None:
        """When the first of `budgets` the admin has not answered for yet was seen (None: it
        answered for all)."""
        waiting = [self.shares[b.name].since for b in budgets
                   if b.name in self.shares and not self.shares[b.name].leased]
        return min(waiting) if waiting else None

    def share(self, budget: Budget, now: float) -> Share:
        self.tick(now)
        s = self.shares.get(budget.name)
        if s is None:
            s = self.shares[budget.name] = Share(budget, self.window,
                                                 budget.limit // max(1, self.gateways),
                                                 pool=budget.limit, since=now)
        elif s.budget.limit != budget.limit:
            s.budget = budget
        return s

    def report(self, now: float) -> list[Usage]:
        """What to send the admin; demand counts from here again."""
        self.tick(now)
        out = [Usage(s.budget.subject, s.budget.resource, s.window, s.used, s.granted, s.demand)
               for s in self.shares.values()]
        for s in self.shares.values():
            s.demand = 0
        return out

    def apply(self, reply: LeaseReply, now: float, sent: list[Usage]) -> None:
        """The admin's answer to the report `sent`. Budgets it no longer sets are dropped."""
        self.tick(now)
        self.window_seconds = reply.window_seconds
        self.gateways = max(1, reply.gateways)
        if reply.window > self.window:  # roll to the admin's window now
            self.window, self.window_end = reply.window - 1, now
            self.tick(now)
        if reply.window == self.window:  # (a gateway a little ahead keeps its own end)
            self.window_end = now + reply.ends_in
        granted = {(g.subject, g.resource): g for g in reply.grants}
        for u in sent:
            name = (u.subject, u.resource)
            s = self.shares.get(name)
            if s is None:
                continue
            g = granted.get(name)
            if g is None:
                del self.shares[name]
            elif reply.window == self.window or s.budget.resource not in WINDOWED:
                s.granted, s.pool, s.used_then, s.leased = g.granted, g.pool, s.used, True
                s.budget = Budget(g.subject, g.resource, g.limit)

    # ---- requests ------------------------------------------------------------------------------
    def admit(self, budgets: list[Budget], costs: dict[str, int], now: float
              ) -> Ticket | Refusal:
        """Every call counts as demand, a request asking again too (it is still unmet)."""
        shares = [(self.share(b, now), costs.get(b.resource, 0)) for b in budgets]
        for s, cost in shares:
            s.demand += cost
        for s, cost in shares:
            refusal = self._refuse(s, cost, now)
            if refusal is not None:
                return refusal
        for s, cost in shares:
            s.used += cost
        return Ticket([(s, cost) for s, cost in shares], self.window)

    def _refuse(self, s: Share, cost: int, now: float) -> Refusal | None:
        b = s.budget
        if s.used + cost <= s.granted:
            return None
        who = _who(b.subject)
        if b.resource == "concurrent":
            return Refusal(429, f"{who} has {s.used} requests in flight, its limit of "
                                f"{b.limit} concurrent requests; retry when one ends",
                           "concurrency_limit_exceeded", RETRY_SOON, b.resource)
        per = f"per {_duration(self.window_seconds)}"
        if cost > b.limit:
            return Refusal(429, f"this request reserves {cost} {b.resource} (the prompt's "
                                f"estimate plus max_tokens), more than {who}'s whole limit of "
                                f"{b.limit} {b.resource} {per}; lower max_tokens or shorten "
                                "the prompt", "request_too_large", None, b.resource)
        resets = self.resets_in(now)
        soon = s.remaining() >= cost and resets > RETRY_SOON
        retry = RETRY_SOON if soon else max(1, math.ceil(resets))
        return Refusal(429, f"rate limit reached for {who}: {b.limit} {b.resource} {per} "
                            f"(requested {cost}); try again in {_duration(retry)}",
                       "rate_limit_exceeded", retry, b.resource, soon)

    def settle(self, ticket: Ticket, tokens: int | None) -> None:
        """The request ended: free its concurrent slot and, when its token count is known,
        charge what it used instead of what it reserved (only within the window it was admitted
        in: a new window already started from zero)."""
        if not ticket.open:
            return
        ticket.open = False
        for s, cost in ticket.charges:
            if s.budget.resource == "concurrent":
                s.used = max(0, s.used - cost)
            elif s.budget.resource == "tokens" and tokens is not None \
                    and ticket.window == self.window:
                s.used = max(0, s.used + tokens - cost)

    def refund(self, ticket: Ticket) -> None:
        """The request never ran (it waited too long for a slot, or its client left): take back
        every charge (a window that ended already started from zero)."""
        if not ticket.open:
            return
        ticket.open = False
        for s, cost in ticket.charges:
            if s.budget.resource == "concurrent" or ticket.window == self.window:
                s.used = max(0, s.used - cost)

    def headers(self, budgets: list[Budget], now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit headers: for requests and for tokens, the tightest budget."""
        out = {}
        for resource, suffix in (("requests", "requests"), ("tokens", "tokens")):
            shares = [self.share(b, now) for b in budgets if b.resource == resource]
            if not shares:
                continue
            tight = min(shares, key=lambda s: s.remaining())
            out[f"x-ratelimit-limit-{suffix}"] = str(tight.budget.limit)
            out[f"x-ratelimit-remaining-{suffix}"] = str(tight.remaining())
            out[f"x-ratelimit-reset-{suffix}"] = _duration(self.resets_in(now))
        return out


def _who(subject: str) -> str:
    kind, _, name = subject.partition(":")
    return f"the key {name}" if kind == "key" else f"the tenant {name}"


def _duration(seconds: float) -> str:
    """As OpenAI writes resets: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest}s"
