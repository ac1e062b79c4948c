"""Which LoRA adapters are resident in an engine: at most `max_loras`, loaded on demand off the
engine's step (read and checked on a worker thread, copied into the stack between steps), least
recently used evicted first, never one that a request in flight uses.

The core asks `acquire(ref)` for each request that waits for its adapter: the adapter's slot once
resident (pinned until `release`), or None while it loads or while every slot is pinned (the
request stays queued; it is not failed). A load that fails is reported once by `failures()` and
the core refuses the requests that waited for it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from llmcell.engine.lora.weights import LoraStack, LoraWeights
from llmcell.protocol.lora import AdapterRef


@dataclass
class _Resident:
    slot: int
    pins: int = 0


@dataclass
class AdapterCounts:
    loads: int = 0
    evictions: int = 0
    load_seconds: float = 0.0


class AdapterSlots:
    def __init__(self, stack: LoraStack, load: Callable[[AdapterRef], LoraWeights]) -> None:
        self.stack = stack
        self.load = load
        self.resident: OrderedDict[AdapterRef, _Resident] = OrderedDict()
        """Least recently used first."""
        self.loading: dict[AdapterRef, tuple[int, Future]] = {}
        """Loads in flight, each with the slot it will take."""
        self.counts: dict[str, AdapterCounts] = {}
        self._free = list(range(stack.slots))
        self._failed: list[tuple[AdapterRef, str]] = []
        self._pool: ThreadPoolExecutor | None = None

    def acquire(self, ref: AdapterRef) -> int | None:
        self._collect()
        entry = self.resident.get(ref)
        if entry is not None:
            entry.pins += 1
            self.resident.move_to_end(ref)
            return entry.slot
        if ref in self.loading or any(r == ref for r, _ in self._failed):
            return None
        if not self._free and not self._evict_one():
            return None  # every slot is in use by requests in flight: wait for one
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="lora-load")
        self.loading[ref] = (self._free.pop(), self._pool.submit(self._timed_load, ref))
        return None

    def _timed_load(self, ref: AdapterRef) -> tuple[LoraWeights, float]:
        started = time.monotonic()
        weights = self.load(ref)
        return weights, time.monotonic() - started

    def release(self, ref: AdapterRef) -> None:
        entry = self.resident.get(ref)
        if entry is not None and entry.pins > 0:
            entry.pins -= 1

    def _evict_one(self) -> bool:
        for ref, entry in self.resident.items():  # least recently used first
            if entry.pins == 0:
                del self.resident[ref]
                self.stack.remove(entry.slot)
                self._free.append(entry.slot)
                self._count(ref).evictions += 1
                return True
        return False

    def _count(self, ref: AdapterRef) -> AdapterCounts:
        return self.counts.setdefault(ref.name, AdapterCounts())

    def _collect(self) -> None:
        """Install finished loads (on the core's thread, between steps)."""
        for ref, (slot, future) in list(self.loading.items()):
            if not future.done():
                continue
            del self.loading[ref]
            try:
                weights, seconds = future.result()
            except (ValueError, OSError) as e:
                self._free.append(slot)
                self._failed.append((ref, str(e)))
                continue
            self.stack.install(slot, weights)
            self.resident[ref] = _Resident(slot)
            counts = self._count(ref)
            counts.loads += 1
            counts.load_seconds += seconds

    def busy(self) -> bool:
        """A load is in flight (the core polls it instead of sleeping on an empty step)."""
        return bool(self.loading)

    def wait(self, timeout: float) -> None:
        if self.loading:
            wait([f for _, f in self.loading.values()], timeout=timeout,
                 return_when=FIRST_COMPLETED)

    def failures(self) -> list[tuple[AdapterRef, str]]:
        """Loads that failed since the last call (each once): the core refuses their requests."""
        self._collect()
        failed, self._failed = self._failed, []
        return failed

    def snapshot(self) -> tuple[tuple[str, int, int, float, bool], ...]:
        """(adapter, loads, evictions, load seconds, resident now) for the metrics."""
        resident = {r.name for r in self.resident}
        return tuple((name, c.loads, c.evictions, c.load_seconds, name in resident)
                     for name, c in sorted(self.counts.items()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
