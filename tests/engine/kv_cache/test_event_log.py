"""The prefix cache's event log: the block manager logs the keys it stores and evicts, with the
same keys a gateway computes from the prompt, and the server's log answers followers with the
events they missed or a snapshot."""

from __future__ import annotations

import pytest

from llmcell.engine.kv_cache import BlockManager
from llmcell.engine.kv_cache.event_log import KVEventLog
from llmcell.protocol.kv_events import KVEventBatch, prompt_block_keys
from tests.engine.kv_cache.test_block_manager import compute_all, seq


def test_the_block_manager_logs_the_keys_a_gateway_computes_from_the_prompt():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.record_events()
    prompt = list(range(100, 111))  # 2 full blocks + 3 tokens
    a = seq(prompt)
    compute_all(bm, a)
    assert bm.drain_events() == [(True, k) for k in prompt_block_keys(prompt, 4)]
    assert bm.drain_events() == []


def test_an_evicted_block_is_logged_as_removed():
    bm = BlockManager(num_blocks=3, block_size=4)
    bm.record_events()
    a = seq(list(range(8)))
    compute_all(bm, a)
    bm.free(a)
    stored = [k for _, k in bm.drain_events()]
    assert len(stored) == 2
    b = seq(list(range(50, 62)))  # needs all three blocks: evicts a's
    compute_all(bm, b)
    events = bm.drain_events()
    assert sorted(k for s, k in events if not s) == sorted(stored)
    assert [k for s, k in events if s] == prompt_block_keys(list(range(50, 62)), 4)


def test_recording_starts_with_the_keys_already_held():
    bm = BlockManager(num_blocks=8, block_size=4)
    compute_all(bm, seq(list(range(8))))  # before anyone follows
    bm.record_events()
    assert sorted(bm.drain_events()) == sorted((True, k) for k in prompt_block_keys(
        list(range(8)), 4))


def test_the_log_sends_the_events_after_since_or_a_snapshot():
    log = KVEventLog(block_size=16, keep=4)
    log.apply([(True, 1), (True, 2), (True, 3)])
    first = log.since(0)  # no epoch: a snapshot
    assert first.snapshot is not None and sorted(first.snapshot) == [1, 2, 3]
    assert first.seq == 3
    log.apply([(False, 2), (True, 4)])
    batch = log.since(3, log.epoch)
    assert batch.snapshot is None and batch.first == 4 and batch.seq == 5
    assert [(e.seq, e.stored, e.key) for e in batch.events] == [(4, False, 2), (5, True, 4)]
    assert log.since(5, log.epoch).events == ()  # up to date: nothing new
    assert log.since(3, "another epoch").snapshot is not None
    log.apply([(True, 5), (True, 6), (True, 7)])  # keep=4: event 4 is gone
    late = log.since(3, log.epoch)
    assert late.snapshot is not None and sorted(late.snapshot) == [1, 3, 4, 5, 6, 7]
    assert KVEventBatch.from_json(late.to_json()) == late
    assert KVEventBatch.from_json(batch.to_json()) == batch


def test_the_log_limits_one_answer():
    log = KVEventLog(block_size=16)
    log.apply([(True, k) for k in range(1, 101)])
    seen = log.since(0)
    log.apply([(True, k) for k in range(101, 201)])
    part = log.since(seen.seq, log.epoch, limit=30)
    assert [e.key for e in part.events] == list(range(101, 131)) and part.seq == 130


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="keep=0"):
        KVEventLog(16, keep=0)
