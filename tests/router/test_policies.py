"""Routing policies on snapshots: balance, bounded load, stability."""

from collections import Counter

from llmcell.protocol.cell import Replica
from llmcell.router import RouteRequest, make_policy
from llmcell.router.policies import hash64


def replicas(n, outstanding=None, queue=None):
    outstanding = outstanding or [0] * n
    queue = queue or [0] * n
    return [Replica(f"s{i}", f"http://h{i}", waiting=queue[i], outstanding=outstanding[i]) for i in range(n)]


def test_round_robin_cycles_in_id_order_whatever_the_snapshot_order():
    rr = make_policy("round_robin")
    snap = list(reversed(replicas(3)))
    assert [rr(snap, RouteRequest(seq=i)).server_id for i in range(6)] == ["s0", "s1", "s2"] * 2


def test_least_load_picks_fewest_outstanding_then_smallest_queue():
    ll = make_policy("least_load")
    assert ll(replicas(3, [2, 1, 1], [0, 5, 3]), RouteRequest()).server_id == "s2"
    assert ll(replicas(3, [0, 1, 1]), RouteRequest()).server_id == "s0"


def test_least_load_balances_a_stream_of_requests():
    ll = make_policy("least_load")
    load = [0, 0, 0, 0]
    for _ in range(400):
        r = ll(replicas(4, load), RouteRequest())
        load[int(r.server_id[1:])] += 1
    assert load == [100, 100, 100, 100]


def test_prefix_affinity_is_sticky_and_agrees_across_gateways():
    a, b = make_policy("prefix_affinity"), make_policy("prefix_affinity")
    snap = replicas(4)
    for k in range(50):
        key = hash64(f"system prompt {k}")
        first = a(snap, RouteRequest(prefix_key=key)).server_id
        assert a(list(reversed(snap)), RouteRequest(prefix_key=key)).server_id == first
        assert b(snap, RouteRequest(seq=k, prefix_key=key)).server_id == first


def test_prefix_affinity_spreads_distinct_prefixes():
    pa = make_policy("prefix_affinity")
    counts = Counter(pa(replicas(4), RouteRequest(prefix_key=hash64(f"p{k}"))).server_id
                     for k in range(4000))
    assert set(counts) == {"s0", "s1", "s2", "s3"}
    assert max(counts.values()) < 1.6 * 1000, counts


def test_prefix_affinity_bounds_the_load_of_a_hot_prefix():
    pa = make_policy("prefix_affinity", bounded_load=1.25)
    load = [0, 0, 0, 0]
    key = hash64("one very popular system prompt")
    for _ in range(200):
        r = pa(replicas(4, load), RouteRequest(prefix_key=key))
        load[int(r.server_id[1:])] += 1
        cap = -(-1.25 * (sum(load)) // 4)  # the bound for the next request
        assert max(load) <= cap + 1
    assert max(load) <= 1.25 * 200 / 4 + 1, load
    assert min(load) > 0


def test_adding_a_replica_moves_about_one_nth_of_the_keys():
    pa = make_policy("prefix_affinity")
    keys = [hash64(f"user-{k}") for k in range(5000)]
    before = [pa(replicas(4), RouteRequest(prefix_key=k)).server_id for k in keys]
    after = [pa(replicas(5), RouteRequest(prefix_key=k)).server_id for k in keys]
    moved = sum(x != y for x, y in zip(before, after))
    assert all(y == "s4" for x, y in zip(before, after) if x != y)  # only to the new one
    assert 0.10 < moved / len(keys) < 0.30, moved / len(keys)  # ~1/5


def test_unknown_policy_names_the_choices():
    import pytest

    with pytest.raises(ValueError, match="least_load"):
        make_policy("fastest")


def test_adapter_affinity_prefers_replicas_holding_the_adapter():
    policy = make_policy("least_load")
    warm = Replica("b", "http://b", resident=True)  # ties with a and c on load
    cold = [Replica("a", "http://a", resident=False), Replica("c", "http://c", resident=False)]
    assert policy([*cold, warm], RouteRequest()).server_id == "b"
    # over the bounded-load cap, the least loaded replica gets it (and loads the adapter)
    busy = Replica("b", "http://b", resident=True, outstanding=9)
    assert policy([*cold, busy], RouteRequest()).server_id == "a"
    # none holds it: the least loaded
    assert policy([Replica("a", "http://a", resident=False, outstanding=3),
                   Replica("c", "http://c", resident=False)], RouteRequest()).server_id == "c"
    # a model (not an adapter) is routed by the policy alone
    assert policy([Replica("a", "http://a", outstanding=1), Replica("c", "http://c")],
                  RouteRequest()).server_id == "c"
