"""The model server's copy of its engine's prefix-cache keys, with the recent changes numbered, so
that gateways can follow them (`GET /cell/kv_events`, protocol/kv_events.py).

The engine core logs each key its block manager stores or evicts and sends the log with each
step's outputs; the engine client applies it here (on the engine's thread or the event loop, so
under a lock). A follower asks for the events after the last number it saw; one that fell
further behind than the `keep` most recent events, or that knows another epoch, gets a snapshot
of every key held instead.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque

from llmcell.protocol.kv_events import KVEvent, KVEventBatch


class KVEventLog:
    def __init__(self, block_size: int, keep: int = 65536) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1")
        self.block_size = block_size
        self.epoch = uuid.uuid4().hex
        self.seq = 0
        self._keys: set[int] = set()
        self._recent: deque[KVEvent] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def apply(self, changes) -> None:
        """`changes`: (stored?, key) pairs, oldest first, as the block manager logged them."""
        if not changes:
            return
        with self._lock:
            for stored, key in changes:
                self.seq += 1
                if stored:
                    self._keys.add(key)
                else:
                    self._keys.discard(key)
                self._recent.append(KVEvent(self.seq, stored, key))

    def since(self, seq: int, epoch: str | None = None, limit: int = 8192) -> KVEventBatch:
        """What a follower that saw up to `seq` (of `epoch`) needs: the events after it (at most
        `limit`), or a snapshot."""
        with self._lock:
            oldest = self._recent[0].seq if self._recent else self.seq + 1
            if epoch != self.epoch or not 0 <= seq <= self.seq or seq + 1 < oldest:
                return KVEventBatch(self.epoch, self.seq, self.block_size,
                                    snapshot=tuple(self._keys))
            start = len(self._recent) - (self.seq - seq)  # the event numbered seq + 1
            events = tuple(self._recent[start + i] for i in range(min(self.seq - seq, limit)))
            last = events[-1].seq if events else self.seq
            return KVEventBatch(self.epoch, last, self.block_size, events=events, first=seq + 1)

    def __len__(self) -> int:
        return len(self._keys)
