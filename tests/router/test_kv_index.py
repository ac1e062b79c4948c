"""The gateway's KV index: events in order or not, restarts, evictions, staleness; and the
kv_affinity policy over what it counts."""

from __future__ import annotations

from llmcell.protocol.cell import Replica
from llmcell.protocol.kv_events import KVEvent, KVEventBatch, prompt_block_keys
from llmcell.router import RouteRequest, make_policy
from llmcell.router.kv_index import KVIndex

BS = 4
PROMPT = list(range(1, 18))  # 4 full blocks
KEYS = prompt_block_keys(PROMPT, BS)


def events(epoch, first, *changes):
    evs = tuple(KVEvent(first + i, stored, key) for i, (stored, key) in enumerate(changes))
    return KVEventBatch(epoch, first + len(changes) - 1, BS, events=evs, first=first)


def counts(index, now=0.0, max_age=10.0):
    return index.cached_tokens(lambda size: prompt_block_keys(PROMPT, size), now, max_age)


def test_a_snapshot_then_events_count_the_leading_blocks_held():
    index = KVIndex()
    assert index.apply("s0", KVEventBatch("e1", 2, BS, snapshot=tuple(KEYS[:2])), 0.0)
    assert counts(index) == {"s0": 2 * BS}
    assert index.apply("s0", events("e1", 3, (True, KEYS[3])), 0.0)
    assert counts(index) == {"s0": 2 * BS}  # block 2 is missing: the run stops there
    assert index.apply("s0", events("e1", 4, (True, KEYS[2])), 0.0)
    assert counts(index) == {"s0": 4 * BS}


def test_an_evicted_block_is_no_longer_counted():
    index = KVIndex()
    index.apply("s0", KVEventBatch("e1", 4, BS, snapshot=tuple(KEYS)), 0.0)
    index.apply("s0", events("e1", 5, (False, KEYS[1])), 0.0)
    assert counts(index) == {"s0": BS}
    index.apply("s0", events("e1", 6, (False, KEYS[0])), 0.0)
    assert counts(index) == {"s0": 0}


def test_events_out_of_order_are_skipped_or_refused():
    index = KVIndex()
    index.apply("s0", KVEventBatch("e1", 2, BS, snapshot=tuple(KEYS[:2])), 0.0)
    late = events("e1", 3, (True, KEYS[2]), (False, KEYS[0]))
    assert index.apply("s0", late, 0.0)
    assert index.apply("s0", late, 0.0)  # the same batch again changes nothing
    assert index.apply("s0", events("e1", 4, (False, KEYS[0])), 0.0)  # partly seen
    assert index.replicas["s0"].keys == set(KEYS[1:3])
    gap = events("e1", 9, (True, KEYS[0]))  # events 5..8 never came: ask for a snapshot
    assert not index.apply("s0", gap, 0.0)
    assert index.replicas["s0"].keys == set(KEYS[1:3])
    old = KVEventBatch("e1", 1, BS, snapshot=(KEYS[0],))  # an older snapshot than ours
    assert index.apply("s0", old, 0.0) and index.replicas["s0"].seq == 4
    assert not index.apply("s1", events("e9", 1, (True, KEYS[0])), 0.0)  # no snapshot yet


def test_a_restarted_replica_comes_back_empty_under_a_new_epoch():
    index = KVIndex()
    index.apply("s0", KVEventBatch("e1", 4, BS, snapshot=tuple(KEYS)), 0.0)
    assert not index.apply("s0", events("e2", 1, (True, KEYS[0])), 0.0)  # new epoch: resync
    index.apply("s0", KVEventBatch("e2", 0, BS, snapshot=()), 0.0)
    assert counts(index) == {"s0": 0}


def test_replicas_that_leave_the_view_or_fall_silent_are_not_counted():
    index = KVIndex()
    index.apply("s0", KVEventBatch("a", 4, BS, snapshot=tuple(KEYS)), 0.0)
    index.apply("s1", KVEventBatch("b", 4, BS, snapshot=tuple(KEYS)), 5.0)
    assert counts(index, now=12.0) == {"s1": 4 * BS}  # s0 last heard 12 s ago
    index.retain(["s0"])
    assert counts(index, now=1.0) == {"s0": 4 * BS}
    index.apply("s0", KVEventBatch("a", 5, BS, hash_scheme="other", snapshot=()), 0.0)
    assert counts(index) == {}  # keys it cannot compute: dropped


def test_replicas_with_another_block_size_are_counted_in_tokens():
    index = KVIndex()
    index.apply("s0", KVEventBatch("a", 1, 8, snapshot=tuple(prompt_block_keys(PROMPT, 8))), 0.0)
    index.apply("s1", KVEventBatch("b", 1, BS, snapshot=tuple(KEYS[:1])), 0.0)
    assert counts(index) == {"s0": 16, "s1": BS}


def replicas(n, outstanding=None):
    outstanding = outstanding or [0] * n
    return [Replica(f"s{i}", f"http://h{i}", outstanding=outstanding[i]) for i in range(n)]


def test_kv_affinity_picks_the_longest_cached_prefix_under_the_load_cap():
    kv = make_policy("kv_affinity")
    assert kv(replicas(3), RouteRequest(1, 42, {"s0": 16, "s1": 48, "s2": 0})).server_id == "s1"
    # ties go to the least loaded
    assert kv(replicas(3, [3, 1, 0]), RouteRequest(1, 42, {"s0": 32, "s1": 32})).server_id == "s1"
    # over the cap (ceil(1.25 * 7 / 3) = 3): the next longest
    assert kv(replicas(3, [0, 6, 0]), RouteRequest(1, 42, {"s0": 16, "s1": 48})).server_id == "s0"


def test_kv_affinity_routes_as_prefix_affinity_when_nothing_is_cached_or_known():
    kv, pa = make_policy("kv_affinity"), make_policy("prefix_affinity")
    snap = replicas(4)
    for key in range(40):
        expected = pa(snap, RouteRequest(1, key)).server_id
        assert kv(snap, RouteRequest(1, key, None)).server_id == expected
        assert kv(snap, RouteRequest(1, key, {"s0": 0, "s1": 0})).server_id == expected
