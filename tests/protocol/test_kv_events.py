"""KV-event wire types: the block-key chain and malformed batches."""

from __future__ import annotations

import pytest

from llmcell.protocol.cell import WireError
from llmcell.protocol.kv_events import (ROOT_KEY, KVEvent, KVEventBatch, block_key,
                                        prompt_block_keys)


def test_a_block_key_names_its_whole_prefix():
    a = prompt_block_keys([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    assert len(a) == 2 and a[0] == block_key(ROOT_KEY, (1, 2, 3, 4))
    assert a[1] == block_key(a[0], (5, 6, 7, 8))
    b = prompt_block_keys([0, 2, 3, 4, 5, 6, 7, 8], 4)  # same second block, other first
    assert b[1] != a[1]
    assert prompt_block_keys(list(range(100)), 4, limit=3) == prompt_block_keys(list(range(12)), 4)


def test_batches_round_trip():
    events = KVEventBatch("e", 7, 16, events=(KVEvent(6, True, 11), KVEvent(7, False, -5)),
                          first=6)
    assert KVEventBatch.from_json(events.to_json()) == events
    snap = KVEventBatch("e", 7, 16, snapshot=(3, 4))
    assert KVEventBatch.from_json(snap.to_json()) == snap


@pytest.mark.parametrize("body,message", [
    ({"epoch": "e", "seq": 1, "block_size": 0, "hash_scheme": "x", "snapshot": []}, "block_size"),
    ({"epoch": "e", "seq": 1, "block_size": 16, "hash_scheme": "x", "snapshot": ["a"]},
     "snapshot"),
    ({"epoch": "e", "seq": 1, "block_size": 16, "hash_scheme": "x", "first": 1,
      "events": [[1, 2, 3]]}, "events"),
    ({"epoch": "e", "seq": 1, "block_size": 16, "hash_scheme": "x", "first": 1,
      "events": [[1, True, 3]]}, "events"),
    ({"seq": 1, "block_size": 16, "hash_scheme": "x", "snapshot": []}, "epoch"),
])
def test_malformed_batches_are_refused(body, message):
    with pytest.raises(WireError, match=message):
        KVEventBatch.from_json(body)
