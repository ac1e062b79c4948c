"""Which replica of a model holds which prompt blocks in its prefix cache, as a gateway follows
their KV events (protocol/kv_events.py): the data `kv_affinity` routes by.

Pure: batches in (`apply`), counts out (`cached_tokens`). Each replica's entry is one epoch of one
engine; a batch of another epoch replaces it only as a snapshot, events already applied are
skipped, and a batch that starts after a gap is refused (`apply` answers False: the follower asks
for a snapshot). A replica that restarts comes back under a new epoch, so the keys of its old
cache are dropped with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from llmcell.protocol.kv_events import HASH_SCHEME, KVEventBatch


@dataclass
class ReplicaBlocks:
    epoch: str
    seq: int
    block_size: int
    keys: set[int] = field(default_factory=set)
    heard: float = 0.0
    """When its server last answered (the follower's clock): older than the staleness bound, the
    entry is not trusted."""


class KVIndex:
    """One model's replicas and the block keys each holds."""

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaBlocks] = {}

    def apply(self, replica: str, batch: KVEventBatch, now: float) -> bool:
        """Apply what `replica`'s server sent; False when it cannot be applied in order (a gap,
        or events of an epoch never snapshotted): ask for a snapshot."""
        if batch.hash_scheme != HASH_SCHEME:
            self.replicas.pop(replica, None)
            return True  # keys this gateway cannot compute: never counted
        known = self.replicas.get(replica)
        if batch.snapshot is not None:
            if known is None or known.epoch != batch.epoch or batch.seq >= known.seq:
                self.replicas[replica] = ReplicaBlocks(batch.epoch, batch.seq, batch.block_size,
                                                       set(batch.snapshot), now)
            else:
                known.heard = now  # an older snapshot than what was applied since: keep ours
            return True
        if known is None or known.epoch != batch.epoch:
            return False
        known.heard = now
        if batch.first > known.seq + 1:
            return False
        for event in batch.events:
            if event.seq <= known.seq:
                continue  # already applied (a batch that came twice, or late)
            if event.stored:
                known.keys.add(event.key)
            else:
                known.keys.discard(event.key)
            known.seq = event.seq
        known.seq = max(known.seq, batch.seq)
        return True

    def drop(self, replica: str) -> None:
        self.replicas.pop(replica, None)

    def retain(self, replicas: Iterable[str]) -> None:
        """Forget every replica not among `replicas` (gone from the routing view)."""
        keep = set(replicas)
        for name in [r for r in self.replicas if r not in keep]:
            del self.replicas[name]

    def cached_tokens(self, keys_for: Callable[[int], list[int]], now: float,
                      max_age: float) -> dict[str, int]:
        """For each replica heard from within `max_age`, how many of the prompt's leading tokens
        its cache holds; `keys_for(block_size)`: the prompt's block keys at that block size."""
        counts, keys_at = {}, {}
        for name, entry in self.replicas.items():
            if now - entry.heard > max_age:
                continue
            if entry.block_size not in keys_at:
                keys_at[entry.block_size] = keys_for(entry.block_size)
            n = 0
            for key in keys_at[entry.block_size]:
                if key not in entry.keys:
                    break
                n += 1
            counts[name] = n * entry.block_size
        return counts
