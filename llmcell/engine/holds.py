"""When requests are handed to the engine, and when a step waits for them: the engine's timing.

A step runs every request the engine holds at once, so a request that just misses a step waits
for it whole (~50-300 ms on a small CPU) while the server needs only a millisecond or two to read
the rest of a burst. Three short holds trade a little latency for that:

- **First turns** (`FIRST_TURNS`, client side): at an idle engine a lone request waits a few turns
  of the event loop, in case it is the first of a burst whose other requests the loop is reading.
- **Idle hold and burst hold** (`idle_hold`, `BURST_GAP`, `BURST_LIMIT`, client side): at an idle
  engine a lone request also waits a small fraction of a prefill step (clients that open new
  connections for a burst reach the server a millisecond or two apart); once several have come,
  the hand-off waits until none has come for `BURST_GAP`, so the burst is prefilled as one batch.
- **Refill hold** (`refill_hold`, engine loop): after a step that finished requests, the next step
  waits briefly for the requests that replace them (a client that read its answer often sends its
  next request at once).

Every hold is at most `HOLD_FRACTION` of a step and at most `EngineConfig.step_hold_ms`; at a busy
engine nothing waits on the client side beyond the current turn of the loop. `HandOff` is the
client side: it batches the adds of one turn (or one burst) into one `Commands`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from llmcell.engine.messages import AbortRequest, AddRequest, Commands
from llmcell.engine.stats import EngineStats

BURST_GAP = 0.005
"""Seconds: a burst reaching an idle engine is held while its requests come at most this apart.
A server reads a request in ~0.5 ms on a small CPU, but a collection or a busy turn of its loop
now and then leaves 2-4 ms between two of them."""
BURST_LIMIT = 0.05
"""Seconds: the longest a burst is held."""
FIRST_TURNS = 3
"""Turns of the event loop a lone request waits at an idle engine before it is handed off: enough
for the loop to poll its sockets and run the requests that came while it read this one;
microseconds when none came. (A timer would not do: uvloop rounds delays to whole milliseconds.)"""
HOLD_FRACTION = 0.02
"""A hold lasts at most this fraction of a step."""


def idle_hold(stats: EngineStats, limit: float) -> float:
    """Seconds a lone request at an idle engine is held for the rest of a possible burst: at most
    `HOLD_FRACTION` of the last prefill step (`stats.prefill_seconds`; none before the first) and
    at most `limit`."""
    return min(limit, HOLD_FRACTION * stats.prefill_seconds)


def refill_hold(finished: int, step_seconds: float, stats: EngineStats, limit: float) -> float:
    """Seconds the engine loop waits, after a step that finished `finished` requests, for new ones
    before it starts the next step (it goes on as soon as as many have come): only on steps that
    freed slots and while nothing already waits to take them; at most `HOLD_FRACTION` of the step
    and at most `limit`."""
    if finished <= 0 or stats.num_waiting > 0:
        return 0.0
    return min(limit, HOLD_FRACTION * step_seconds)


class HandOff:
    """The client side of the holds: adds submitted in one turn of the event loop (or one burst,
    at an idle engine) go to `post` as one `Commands`; an abort that comes while its add is still
    here follows it in the same hand-off."""

    def __init__(self, post: Callable[[Commands], None], stats: Callable[[], EngineStats]) -> None:
        self._post = post
        self._stats = stats
        self.limit = 0.0
        """Seconds: the most a lone request at an idle engine is held (`idle_hold`); from
        `EngineConfig.step_hold_ms`."""
        self._pending: list[AddRequest | AbortRequest] | None = None
        self._since = 0.0
        self._timer: asyncio.Handle | None = None

    def _idle(self) -> bool:
        stats = self._stats()
        return stats.num_running + stats.num_waiting == 0

    def add(self, loop: asyncio.AbstractEventLoop, request: AddRequest) -> None:
        """Queue an add (from the event loop): handed off at the next turn (`FIRST_TURNS` and the
        idle hold at an idle engine), or after the burst."""
        now = time.monotonic()
        if self._pending is None:
            self._pending, self._since = [request], now
            idle = self._idle()
            hold = idle_hold(self._stats(), self.limit) if idle else 0.0
            self._timer = loop.call_soon(self._flush_in, loop, FIRST_TURNS - 1 if idle else 0,
                                         now + hold)
            return
        self._pending.append(request)
        if self._idle():
            self._timer.cancel()
            wait = min(BURST_GAP, self._since + BURST_LIMIT - now)
            self._timer = loop.call_later(max(0.0, wait), self.flush)

    def abort(self, request_id: str) -> None:
        if self._pending is not None:
            self._pending.append(AbortRequest(request_id))
        else:
            self._post(Commands((AbortRequest(request_id),)))

    def _flush_in(self, loop: asyncio.AbstractEventLoop, turns: int, until: float) -> None:
        """Hand off after `turns` more turns of the loop, and not before `until`."""
        if turns > 0:
            self._timer = loop.call_soon(self._flush_in, loop, turns - 1, until)
        elif (left := until - time.monotonic()) > 0:
            self._timer = loop.call_later(left, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        items, self._pending, self._timer = self._pending, None, None
        if items:
            self._post(Commands(tuple(items)))
