"""Block manager: allocation, reference counts, prefix hits and LRU eviction (no model)."""

from __future__ import annotations

import pytest

from llmcell.engine.kv_cache import BlockManager
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.sequence import Sequence

_ids = iter(range(10**6))


def seq(tokens: list[int]) -> Sequence:
    return Sequence(next(_ids), "r", 0, list(tokens), SamplingParams())


def compute_all(bm: BlockManager, s: Sequence) -> None:
    """Pretend the runner computed every token of `s` (as the scheduler's update would)."""
    assert bm.allocate_slots(s, s.num_tokens - s.num_computed_tokens)
    s.num_computed_tokens = s.num_tokens
    bm.commit_full_blocks(s)


def test_allocation_is_all_or_nothing():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = seq(list(range(10)))  # needs 3 blocks
    assert bm.allocate_slots(a, 10)
    assert len(a.block_table) == 3 and bm.num_free_blocks == 1
    b = seq(list(range(100, 108)))  # needs 2, only 1 free
    assert not bm.allocate_slots(b, 8)
    assert b.block_table == [] and bm.num_free_blocks == 1


def test_prefix_hit_shares_blocks_and_counts_references():
    bm = BlockManager(num_blocks=16, block_size=4)
    prompt = list(range(13))  # 3 full blocks + 1 token
    a = seq(prompt)
    assert bm.attach_cached_prefix(a) == 0
    compute_all(bm, a)
    b = seq(prompt[:12] + [99, 98])
    hit = bm.attach_cached_prefix(b)
    assert hit == 12
    assert b.block_table == a.block_table[:3]
    assert all(bm.ref_count(x) == 2 for x in a.block_table[:3])
    assert bm.stats.hits == 12 and bm.stats.queries == 13 + 14


def test_hit_always_leaves_a_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(list(range(8)))
    compute_all(bm, a)
    b = seq(list(range(8)))  # identical, block-aligned prompt
    assert bm.attach_cached_prefix(b) == 4  # the last block is recomputed, never shared-written


def test_hash_collision_is_rejected_by_token_comparison():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq([1, 2, 3, 4, 5])
    compute_all(bm, a)
    block = a.block_table[0]
    bm._blocks[block].token_ids = (9, 9, 9, 9)  # same key, different tokens: must not hit
    b = seq([1, 2, 3, 4, 5])
    assert bm.attach_cached_prefix(b) == 0


def test_freed_cached_blocks_stay_hittable_until_reused_lru():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq([1, 2, 3, 4, 5])  # blocks: [1,2] [3,4] [5]
    compute_all(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.usage == 0.0
    b = seq([1, 2, 3, 4, 7])
    assert bm.attach_cached_prefix(b) == 4  # still cached after free
    bm.free(b)
    # Fill the pool with unrelated tokens: the LRU cached blocks are evicted for reuse.
    c = seq([50, 51, 52, 53, 54, 55, 56, 57])
    compute_all(bm, c)
    d = seq([1, 2, 3, 4, 7])
    assert bm.attach_cached_prefix(d) == 0


def test_eviction_order_keeps_prefix_heads_longest():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq([1, 2, 3, 4, 5, 6])  # three full blocks? 6 tokens = 3 blocks
    compute_all(bm, a)
    head, mid, tail = a.block_table
    bm.free(a)
    x = seq([9, 9])
    assert bm.allocate_slots(x, 2)  # takes the uncached spare block first
    y = seq([8, 8])
    assert bm.allocate_slots(y, 2)
    assert y.block_table == [tail]  # the tail of the freed prefix goes before its head
    assert bm.is_cached(head) and bm.is_cached(mid)


def test_double_free_is_detected():
    bm = BlockManager(num_blocks=2, block_size=2)
    a = seq([1, 2])
    assert bm.allocate_slots(a, 2)
    table = list(a.block_table)
    bm.free(a)
    a.block_table = table
    with pytest.raises(RuntimeError):
        bm.free(a)


def test_invalid_sizes_raise_value_error():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(num_blocks=0, block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(num_blocks=4, block_size=0)
