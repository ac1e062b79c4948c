"""KV-cache events: which prompt blocks a replica's prefix cache holds, as the gateways follow it.

A block is named by a hash chain over token ids: block `b`'s key is `block_key(key of b - 1,
tokens of b)`, starting from `ROOT_KEY`, so one key names a whole prefix. The engine's prefix
cache keys its blocks so (engine/kv_cache/block_manager.py) and a gateway computes the same keys
from the request's prompt (`prompt_block_keys`), then asks its index which replica holds the
longest run of them.

A model server answers `GET /cell/kv_events?model=M&since=N` with a `KVEventBatch`: the events
numbered after N (`[seq, 1, key]` stored, `[seq, 0, key]` removed, in order), or, when N is older than what it kept
(or 0, or from another epoch), a snapshot of every key it holds. `epoch` changes when the engine
restarts: a follower that sees a new epoch drops what it knew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcell.protocol.cell import WireError, _get

ROOT_KEY = 0x6C6C6D63656C6C
"""The parent key of a prompt's first block."""
HASH_SCHEME = "py-tuple-hash-v1"
"""How keys are made (`block_key`): CPython's hash of (parent, token ids) on a 64-bit build. A
follower that computes keys otherwise ignores the replica's events."""


def block_key(parent: int, tokens: tuple[int, ...]) -> int:
    return hash((parent, tokens))


def prompt_block_keys(token_ids: list[int], block_size: int, limit: int | None = None,
                      root: int = ROOT_KEY) -> list[int]:
    """The keys of the prompt's full blocks, in order (at most `limit` of them); `root`: a LoRA
    adapter's (protocol/lora.py `cache_root`), whose blocks are its own."""
    count = len(token_ids) // block_size
    if limit is not None:
        count = min(count, limit)
    keys, parent = [], root
    for b in range(count):
        parent = block_key(parent, tuple(token_ids[b * block_size:(b + 1) * block_size]))
        keys.append(parent)
    return keys


@dataclass(frozen=True)
class KVEvent:
    """One change to a prefix cache: a block's key stored (`True`) or removed (evicted)."""

    seq: int
    stored: bool
    key: int


@dataclass(frozen=True)
class KVEventBatch:
    epoch: str
    """Names one run of the engine: a new one means every key known before is gone."""
    seq: int
    """The number of the last event this batch covers (what the next `since` is)."""
    block_size: int
    hash_scheme: str = HASH_SCHEME
    events: tuple[KVEvent, ...] = ()
    """Events numbered after the `since` asked for, oldest first (not a snapshot)."""
    snapshot: tuple[int, ...] | None = None
    """Every key held at `seq`, instead of events (replaces what the follower knew)."""
    first: int = 0
    """The number of the first event in `events` (a follower that is missing events between what
    it holds and this one asks for a snapshot instead)."""

    def to_json(self) -> dict:
        body: dict[str, Any] = {"epoch": self.epoch, "seq": self.seq,
                                "block_size": self.block_size, "hash_scheme": self.hash_scheme}
        if self.snapshot is not None:
            body["snapshot"] = list(self.snapshot)
        else:
            body["first"] = self.first
            body["events"] = [[e.seq, int(e.stored), e.key] for e in self.events]
        return body

    @classmethod
    def from_json(cls, data: Any) -> "KVEventBatch":
        epoch, seq = _get(data, "epoch", str), _get(data, "seq", int)
        block_size = _get(data, "block_size", int)
        if block_size < 1:
            raise WireError(f"field 'block_size' must be >= 1, got {block_size}")
        scheme = _get(data, "hash_scheme", str)
        if "snapshot" in data:
            keys = _get(data, "snapshot", list)
            if not all(isinstance(k, int) for k in keys):
                raise WireError("field 'snapshot' must list integer keys")
            return cls(epoch, seq, block_size, scheme, snapshot=tuple(keys))
        events = []
        for item in _get(data, "events", list):
            if not (isinstance(item, list) and len(item) == 3
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in item)
                    and item[1] in (0, 1)):
                raise WireError("field 'events' must list [seq, 1 (stored) or 0 (removed), key]")
            events.append(KVEvent(item[0], bool(item[1]), item[2]))
        return cls(epoch, seq, block_size, scheme, tuple(events), first=_get(data, "first", int))
