"""Global quotas as a simulation: gateways (`Ledger`s) and the admin (`LeaseBook`) on one fake
clock, exchanging reports for leases with a delay in between, while clients keep asking. The
limit holds across gateways, window after window; a dead gateway's share comes back; the clock
jumping does not reopen a window."""

from __future__ import annotations

import random

import pytest

from llmcell.protocol.tenancy import Budget
from llmcell.tenancy.leases import LeaseBook
from llmcell.tenancy.ledger import Ledger, Refusal

WINDOW = 5.0
RPM = Budget("key:k1", "requests", 120)
TPM = Budget("key:k1", "tokens", 6000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cell:
    """`n` gateways and an admin; `step` advances the clock by `dt`, and each gateway that is
    due reports, its reply landing `rtt` later (admissions go on meanwhile)."""

    def __init__(self, n: int, budgets=(RPM,), interval: float = 0.2, rtt: float = 0.03,
                 ttl: float = 1.0) -> None:
        self.clock = Clock()
        self.book = LeaseBook(WINDOW, ttl, self.clock)
        self.budgets = {b.name: b for b in budgets}
        self.gateways = [Ledger() for _ in range(n)]
        self.alive = [True] * n
        self.interval, self.rtt = interval, rtt
        self.next_report = [self.clock.now + i * interval / n for i in range(n)]
        self.in_flight: list[tuple[float, int, object, list]] = []
        for i in range(n):  # each gateway's first exchange, as on the first request
            self._report(i)
        self._land(force=True)

    def _report(self, i: int) -> None:
        sent = self.gateways[i].report(self.clock.now)
        reply = self.book.exchange(f"g{i}", sent, self.budgets)
        self.in_flight.append((self.clock.now + self.rtt, i, reply, sent))

    def _land(self, force: bool = False) -> None:
        for item in list(self.in_flight):
            due, i, reply, sent = item
            if force or due <= self.clock.now:
                self.in_flight.remove(item)
                if self.alive[i]:
                    self.gateways[i].apply(reply, self.clock.now, sent)

    def step(self, dt: float) -> None:
        self.clock.now += dt
        self._land()
        for i in range(len(self.gateways)):
            if self.alive[i] and self.clock.now >= self.next_report[i]:
                self.next_report[i] += self.interval
                self._report(i)

    def window(self) -> int:
        return self.book.window(self.clock.now)


def run(cell: Cell, seconds: float, rate: float, pick, cost=lambda: {"requests": 1},
        dt: float = 0.005, seed: int = 0) -> dict[int, int]:
    """Clients ask `rate` times a second at the gateway `pick(rng)`; admitted per window. A
    gateway that holds no lease for a budget yet asks the admin first (as a request does)."""
    rng = random.Random(seed)
    admitted: dict[int, int] = {}
    budgets = list(cell.budgets.values())
    for _ in range(int(seconds / dt)):
        cell.step(dt)
        expected = rate * dt
        for _ in range(int(expected) + (rng.random() < expected - int(expected))):
            g = pick(rng)
            if not cell.alive[g]:
                continue
            costs = cost()
            if cell.gateways[g].missing(budgets, costs, cell.clock.now):
                cell._report(g)
                cell._land(force=True)
            decision = cell.gateways[g].admit(budgets, costs, cell.clock.now)
            if not isinstance(decision, Refusal):
                w = cell.window()
                admitted[w] = admitted.get(w, 0) + 1
    return admitted


def full_windows(admitted: dict[int, int]) -> list[int]:
    """Counts of the windows wholly inside the run (not the first nor the last)."""
    keys = sorted(admitted)
    return [admitted[k] for k in keys[1:-1]]


def test_two_gateways_admit_the_limit_per_window_whichever_a_client_reaches():
    cell = Cell(2)
    counts = full_windows(run(cell, 6 * WINDOW, rate=80, pick=lambda rng: rng.randrange(2)))
    assert len(counts) >= 4
    assert all(108 <= c <= 120 for c in counts), counts


def test_a_client_on_one_gateway_gets_the_whole_limit_and_never_more():
    cell = Cell(3)
    counts = full_windows(run(cell, 6 * WINDOW, rate=80, pick=lambda rng: 0))
    assert all(108 <= c <= 120 for c in counts), counts


def test_demand_that_moves_between_gateways_is_followed():
    cell = Cell(2)
    counts = full_windows(run(cell, 8 * WINDOW, rate=60,
                              pick=lambda rng: 0 if cell.clock.now % 4 < 2 else 1))
    assert all(100 <= c <= 120 for c in counts), counts


def test_a_client_under_its_limit_that_moves_to_another_gateway_is_not_refused():
    """The admin keeps a lease for every live gateway, one that never saw the budget too, so the
    first request a client sends elsewhere finds room there (a window's limit is 120)."""
    cell = Cell(2)
    refused = []
    for step in range(int(2 * WINDOW / 0.05)):
        cell.step(0.05)
        g = 0 if cell.clock.now - 1000 < 3.0 else 1
        if cell.gateways[g].missing([RPM], {"requests": 1}, cell.clock.now):
            cell._report(g)
            cell._land(force=True)
        if step % 2 == 0:  # 10 a second: a third of the limit
            decision = cell.gateways[g].admit([RPM], {"requests": 1}, cell.clock.now)
            if isinstance(decision, Refusal):
                refused.append((round(cell.clock.now - 1000, 2), g))
    assert not refused, refused


def test_tokens_are_reserved_and_settled_to_what_was_used():
    cell = Cell(1, budgets=(TPM,))
    ledger = cell.gateways[0]
    ticket = ledger.admit([TPM], {"tokens": 5000}, cell.clock.now)
    assert not isinstance(ticket, Refusal)
    refused = ledger.admit([TPM], {"tokens": 2000}, cell.clock.now)
    assert isinstance(refused, Refusal) and refused.retry_after >= 1
    ledger.settle(ticket, 300)  # it used 300 of the 5,000 it reserved
    assert not isinstance(ledger.admit([TPM], {"tokens": 2000}, cell.clock.now), Refusal)


def test_a_reservation_over_the_whole_limit_is_refused_without_a_retry():
    cell = Cell(1, budgets=(TPM,))
    refused = cell.gateways[0].admit([TPM], {"tokens": 6001}, cell.clock.now)
    assert isinstance(refused, Refusal) and refused.code == "request_too_large"
    assert refused.retry_after is None and "6000" in refused.message and "6001" in refused.message


def test_a_dead_gateways_share_returns_after_the_lease_period():
    cell = Cell(2, ttl=1.0)
    run(cell, 0.5, rate=40, pick=lambda rng: rng.randrange(2))
    held = cell.gateways[1].shares[RPM.name].granted
    assert held > 20  # the second gateway holds a good part of the budget
    cell.alive[1] = False  # it dies holding its lease
    before = run(cell, 0.5, rate=400, pick=lambda rng: 0, seed=1)
    after = run(cell, 1.5, rate=400, pick=lambda rng: 0, seed=2)
    assert sum(before.values()) + sum(after.values()) > 120 - held  # its unused share came back
    assert sum(after.values()) + sum(before.values()) <= 120


def test_a_concurrency_budget_counts_requests_in_flight_across_gateways():
    budget = Budget("tenant:t", "concurrent", 4)
    cell = Cell(2, budgets=(budget,))
    for g in (0, 1):  # each asks the admin before its first request
        cell.gateways[g].share(budget, cell.clock.now)
        cell._report(g)
        cell._land(force=True)
    held: list[tuple[int, object]] = []
    most = 0
    for step in range(200):  # both gateways keep asking; one request ends now and then
        cell.step(0.01)
        for g in (0, 1):
            d = cell.gateways[g].admit([budget], {"concurrent": 1}, cell.clock.now)
            if not isinstance(d, Refusal):
                held.append((g, d))
        most = max(most, len(held))
        assert len(held) <= 4  # never more in flight, wherever they came in
        if step % 50 == 49:
            g, t = held.pop(0)
            cell.gateways[g].settle(t, None)
    assert most == 4


def test_a_clock_jumping_back_reopens_no_window():
    cell = Cell(1)
    run(cell, 1.0, rate=400, pick=lambda rng: 0)
    w = cell.window()
    cell.clock.now -= 3 * WINDOW  # the admin's clock goes back
    assert cell.window() == w
    counts = run(cell, 2.0, rate=400, pick=lambda rng: 0, seed=3)
    assert sum(counts.values()) == 0  # the window is spent; no earlier one came back


def test_a_budget_no_longer_set_stops_being_enforced():
    cell = Cell(1)
    run(cell, 1.0, rate=400, pick=lambda rng: 0)
    cell.budgets = {}
    cell.step(0.3)
    cell.step(0.1)
    assert RPM.name not in cell.gateways[0].shares


def test_without_the_admin_the_last_lease_holds_window_after_window():
    cell = Cell(2)
    run(cell, 2.0, rate=80, pick=lambda rng: rng.randrange(2))
    grant = cell.gateways[0].shares[RPM.name].granted
    ledger = cell.gateways[0]
    now = cell.clock.now
    admitted = sum(not isinstance(ledger.admit([RPM], {"requests": 1}, now + WINDOW * 2), Refusal)
                   for _ in range(500))
    assert admitted == grant  # a new window, the same lease, no admin


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", 10**13])
def test_limits_must_be_positive_integers(bad):
    from llmcell.protocol.cell import WireError
    from llmcell.protocol.tenancy import TenantRecord

    with pytest.raises(WireError, match="rpm"):
        TenantRecord.from_json({"tenant": "t", "rpm": bad})
