"""The fair queue's order, and the slots it hands out, without servers."""

from __future__ import annotations

import pytest

from llmcell.tenancy.fair_queue import FairQueue, Slots, Waiter


def order(q: FairQueue) -> list[str]:
    out = []
    while (w := q.pop()) is not None:
        out.append(w.payload)
    return out


def test_a_tenant_that_sends_one_goes_ahead_of_a_flood():
    q = FairQueue()
    for i in range(10):
        q.push(Waiter("a", "interactive", 100, 0.0, f"a{i}"))
    q.push(Waiter("b", "interactive", 100, 0.1, "b0"))
    got = order(q)
    assert got.index("b0") == 1  # after the flood's first, not its tenth
    assert [x for x in got if x.startswith("a")] == [f"a{i}" for i in range(10)]  # FIFO within


def test_weights_share_tokens_in_proportion_while_both_wait():
    q = FairQueue()
    for i in range(30):
        q.push(Waiter("heavy", "interactive", 10, 0.0, "heavy"), weight=2.0)
        q.push(Waiter("light", "interactive", 10, 0.0, "light"), weight=1.0)
    first = order(q)[:30]
    assert first.count("heavy") == 20 and first.count("light") == 10


def test_cost_counts_a_big_request_more_than_a_small_one():
    q = FairQueue()
    for i in range(4):
        q.push(Waiter("big", "interactive", 1000, 0.0, "big"))
    for i in range(4):
        q.push(Waiter("small", "interactive", 250, 0.0, "small"))
    assert order(q)[:5] == ["big", "small", "small", "small", "small"]


def test_interactive_goes_before_batch_and_a_quiet_tenant_banks_no_credit():
    q = FairQueue()
    for i in range(3):
        q.push(Waiter("a", "batch", 10, 0.0, f"batch{i}"))
    q.push(Waiter("b", "interactive", 10, 0.0, "inter"))
    assert order(q) == ["inter", "batch0", "batch1", "batch2"]
    for i in range(5):  # a runs alone for a while
        q.push(Waiter("a", "interactive", 10, 0.0, "a"))
    order(q)
    for i in range(3):
        q.push(Waiter("a", "interactive", 10, 0.0, "a"))
        q.push(Waiter("c", "interactive", 10, 0.0, "c"))
    assert order(q) == ["c", "a"] * 3  # they alternate: c, new, gets no burst for a's past


def test_per_tenant_bound_removal_and_eligibility():
    q = FairQueue(max_per_tenant=2)
    w1, w2 = Waiter("a", "interactive", 1, 0.0, 1), Waiter("a", "interactive", 1, 0.0, 2)
    assert q.push(w1) and q.push(w2)
    assert not q.push(Waiter("a", "interactive", 1, 0.0, 3))  # a is at its bound
    assert q.push(Waiter("b", "interactive", 1, 0.0, "b"))
    assert q.remove(w1) and not q.remove(w1)
    assert q.pop(lambda tenant: tenant != "a").payload == "b"
    assert len(q) == 1 and q.pop().payload == 2 and q.pop() is None
    with pytest.raises(ValueError, match="weight"):
        q.push(Waiter("a", "interactive", 1, 0.0), weight=0)


def test_slots_keep_one_free_for_another_active_tenant():
    s = Slots(recent=10.0)
    s.seen("b", 0.0)  # b asked a moment ago and has nothing in flight
    for _ in range(7):
        s.seen("a", 1.0)
        assert s.eligible("a", 8, 1.0)
        s.take("a")
    assert not s.eligible("a", 8, 1.0)  # the last slot waits for b
    assert s.eligible("b", 8, 1.0)
    s.take("b")
    assert not s.eligible("a", 8, 1.0)  # full
    s.give("b")
    assert not s.eligible("a", 8, 1.0) and s.eligible("a", 8, 20.0)  # b went quiet: a may
    assert s.eligible("x", None, 1.0)  # capacity unknown: never full


def test_slots_reserve_at_most_half():
    s = Slots()
    for t in "bcdefgh":
        s.seen(t, 0.0)
    for _ in range(4):
        assert s.eligible("a", 8, 0.0)
        s.take("a")
    assert not s.eligible("a", 8, 0.0)
