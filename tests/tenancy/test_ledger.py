"""A gateway's ledger on its own: the x-ratelimit headers, refusals and their retries, and a
window that rolls."""

from __future__ import annotations

from llmcell.protocol.tenancy import Budget, Grant, LeaseReply
from llmcell.tenancy.ledger import Ledger, Refusal, _duration

RPM = Budget("key:k", "requests", 10)
TENANT_RPM = Budget("tenant:t", "requests", 4)
TPM = Budget("key:k", "tokens", 1000)


def leased(ledger: Ledger, now: float, *grants: tuple[Budget, int, int], ends_in: float = 30.0,
           window: int = 0) -> None:
    for b, _, _ in grants:
        ledger.share(b, now)
    sent = ledger.report(now)
    ledger.apply(LeaseReply(window, 60.0, ends_in, 1, tuple(
        Grant(b.subject, b.resource, b.limit, granted, pool) for b, granted, pool in grants)),
        now, sent)


def test_headers_show_the_tightest_budget_and_when_it_resets():
    ledger = Ledger()
    leased(ledger, 0.0, (RPM, 10, 10), (TENANT_RPM, 4, 4), (TPM, 1000, 1000))
    for _ in range(3):
        assert not isinstance(ledger.admit([RPM, TENANT_RPM, TPM],
                                           {"requests": 1, "tokens": 100}, 0.0), Refusal)
    h = ledger.headers([RPM, TENANT_RPM, TPM], 1.5)
    assert h["x-ratelimit-limit-requests"] == "4" and h["x-ratelimit-remaining-requests"] == "1"
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == "700"
    assert h["x-ratelimit-reset-requests"] == "28.5s"


def test_a_refusal_says_which_limit_and_when_to_retry():
    ledger = Ledger()
    leased(ledger, 0.0, (RPM, 2, 10))  # this gateway holds 2 of the cell's 10
    for _ in range(2):
        ledger.admit([RPM], {"requests": 1}, 0.0)
    soon = ledger.admit([RPM], {"requests": 1}, 0.0)
    assert isinstance(soon, Refusal) and soon.retry_after == 1  # the cell has more: a lease away
    assert "key k" in soon.message and "10 requests per 1m0s" in soon.message
    leased(ledger, 1.0, (RPM, 2, 0), ends_in=20.0)  # the cell has none left
    late = ledger.admit([RPM], {"requests": 1}, 1.0)
    assert isinstance(late, Refusal) and late.retry_after == 20


def test_a_refused_request_is_charged_to_no_budget():
    ledger = Ledger()
    leased(ledger, 0.0, (RPM, 10, 10), (TENANT_RPM, 1, 4))
    assert not isinstance(ledger.admit([RPM, TENANT_RPM], {"requests": 1}, 0.0), Refusal)
    assert isinstance(ledger.admit([RPM, TENANT_RPM], {"requests": 1}, 0.0), Refusal)
    assert ledger.shares[RPM.name].used == 1  # the key's budget was not charged for it


def test_a_new_window_starts_from_zero_with_the_same_lease_and_refunds_stay_in_theirs():
    ledger = Ledger()
    leased(ledger, 0.0, (TPM, 800, 1000), ends_in=5.0)
    ticket = ledger.admit([TPM], {"tokens": 800}, 0.0)
    assert isinstance(ledger.admit([TPM], {"tokens": 1}, 4.0), Refusal)
    assert not isinstance(ledger.admit([TPM], {"tokens": 800}, 5.5), Refusal)  # rolled
    ledger.settle(ticket, 10)  # the old window's request ends: this window keeps its count
    assert ledger.shares[TPM.name].used == 800


def test_durations_read_as_openai_writes_them():
    assert [_duration(s) for s in (0.02, 1, 1.5, 59.9, 360, 61)] == [
        "20ms", "1s", "1.5s", "59.9s", "6m0s", "1m1s"]
