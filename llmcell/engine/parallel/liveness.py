"""Liveness of a group's members, beside the collectives (which only fail when used).

The leader hosts a small key-value store (torch's TCPStore) on the rendezvous port + 1; each
worker bumps its counter there twice a second from a thread. The leader's watchdog reads the
counters every second and calls `on_dead(rank)` once a counter stood still for `dead_after`
seconds. Counters, not clocks: hosts need not agree on the time.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Callable

from torch.distributed import TCPStore

BEAT_S = 0.5


def _store(host: str, port: int, size: int, leader: bool, timeout_s: float) -> TCPStore:
    return TCPStore(host, port + 1, size, is_master=leader,
                    timeout=timedelta(seconds=timeout_s), wait_for_workers=False)


def start_beating(host: str, port: int, size: int, rank: int, timeout_s: float) -> None:
    """Worker: a daemon thread that says 'alive' until the process ends."""
    store = _store(host, port, size, False, timeout_s)

    def beat() -> None:
        while True:
            try:
                store.add(f"beat/{rank}", 1)
            except RuntimeError:
                return  # the leader is gone; the worker's next collective fails too
            time.sleep(BEAT_S)

    threading.Thread(target=beat, name="llmcell-group-beat", daemon=True).start()


def watch(host: str, port: int, size: int, dead_after: float,
          on_dead: Callable[[int], None]) -> TCPStore:
    """Leader: host the store and watch every worker's counter from a daemon thread."""
    store = _store(host, port, size, True, 60.0)

    def loop() -> None:
        seen = {r: (-1, time.monotonic()) for r in range(1, size)}
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            for rank, (count, since) in seen.items():
                current = store.add(f"beat/{rank}", 0)
                if current != count:
                    seen[rank] = (current, now)
                elif now - since > dead_after:
                    on_dead(rank)
                    return

    threading.Thread(target=loop, name="llmcell-group-watchdog", daemon=True).start()
    return store
