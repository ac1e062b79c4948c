"""Async engine: asyncio callers submit requests and stream their outputs while the engine core
steps elsewhere: on a thread of this process (`AsyncEngine`) or in a process of its own
(`ProcessEngine`, engine/process.py). `EngineClient` is the event-loop side both share.

`submit()` validates the request in the caller (so bad input fails at once), queues it for the
engine at once and returns a `RequestStream` of `RequestOutput`s as tokens arrive; closing the
stream before it ends (e.g. a client disconnect) aborts the request, freeing its blocks at the next
step boundary. `generate()` is the same as an async generator that closes its stream itself. A
server submits before it starts its response, so prefill overlaps with sending the headers.

Requests submitted in the same turn of the event loop reach the engine together (one hand-off, at
the loop's next turn), so at a busy engine a request waits only for the current turn to end
(microseconds). At an idle engine a lone request waits a few turns (`FIRST_TURNS`) in case it is
the first of a burst, and at least `idle_hold` (a small fraction of a prefill step): clients
that open new connections for a burst reach the server a millisecond or two apart while it accepts
them, longer than a few turns. When several have arrived, that is a burst still being read: the
hand-off then waits until no request has come for `BURST_GAP` (at most `BURST_LIMIT` in all), so
the whole burst is prefilled as one batch. Otherwise the first few would run a step of their own
and the rest would wait for it: a whole step (~50-300 ms on a small CPU) instead of the few
milliseconds the server needs to read the rest. After a step that finished requests, the engine
loop holds the next step briefly for the requests that replace them (`refill_hold`). Both holds
are capped by `EngineConfig.step_hold_ms`. The engine never blocks the
event loop: a thread's outputs cross over with `loop.call_soon_threadsafe`, a step's outputs in
one wake-up. If a step raises, every in-flight request fails with that error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import TYPE_CHECKING, AsyncIterator

from llmcell.config.engine import EngineConfig
from llmcell.engine.outputs import RequestOutput
from llmcell.engine.params import SamplingParams, check_request
from llmcell.engine.stats import EngineStats

if TYPE_CHECKING:  # torch: only where the core runs (not in a server whose engine is a process)
    from llmcell.engine.core import EngineCore


BURST_GAP = 0.005
"""Seconds: a burst reaching an idle engine is held while its requests come at most this apart.
A server reads a request in ~0.5 ms on a small CPU, but a collection or a busy turn of its loop
now and then leaves 2-4 ms between two of them; a burst cut there would leave the rest waiting a
whole step (hundreds of milliseconds)."""
BURST_LIMIT = 0.05
"""Seconds: the longest a burst is held."""
FIRST_TURNS = 3
"""Turns of the event loop a lone request waits at an idle engine before it is handed off: enough
for the loop to poll its sockets and run the requests that came while it read this one (the rest
of a burst whose first request arrived alone), which then hold the burst; microseconds when none
came. (A timer would not do: uvloop rounds delays to whole milliseconds.)"""


HOLD_FRACTION = 0.02
"""A hold for requests about to come lasts at most this fraction of a step (and at most
`EngineConfig.step_hold_ms`): after a step that finished requests (`refill_hold`), and for a lone
request at an idle engine (`idle_hold`)."""


def idle_hold(stats: EngineStats, limit: float) -> float:
    """Seconds a lone request at an idle engine is held for the rest of a possible burst. Without
    it, a burst whose requests come a millisecond or two apart (clients opening new connections,
    which the server accepts one after another) is split: the first request runs a prefill step
    of its own and the rest wait for it whole. The hold costs that lone request at most
    `HOLD_FRACTION` of a prefill step (`stats.prefill_seconds`, the last one) on top of its own;
    `limit` (seconds) caps it, and before the first prefill there is none."""
    return min(limit, HOLD_FRACTION * stats.prefill_seconds)


def refill_hold(finished: int, step_seconds: float, stats: EngineStats, limit: float) -> float:
    """Seconds the engine loop waits, after a step that finished `finished` requests, for new ones
    before it starts the next step (it goes on as soon as as many have come). A client that has
    just read its answer often sends its next request at once (a chat, an agent, a benchmark's
    closed loop); that request reaches the engine a millisecond or a few later, through the
    server, and without the hold it misses the step that has just begun and waits for it whole
    (~300 ms on a small CPU). The hold costs at most `HOLD_FRACTION` of throughput, on steps that
    freed slots and only while nothing already waits to take them; `limit` (seconds) caps it."""
    if finished <= 0 or stats.num_waiting > 0:
        return 0.0
    return min(limit, HOLD_FRACTION * step_seconds)


def count_adds(commands: list[tuple]) -> int:
    """New requests among engine commands (a "batch" holds several)."""
    return sum(sum(c[0] == "add" for c in cmd[1]) if cmd[0] == "batch" else cmd[0] == "add"
               for cmd in commands)


class EngineDeadError(RuntimeError):
    """The engine thread failed; requests cannot be served."""


class RequestStream:
    """One submitted request's outputs, in order. Iterate it; `close()` it when done with it (an
    unfinished request is then aborted). Closing twice, or after the end, does nothing."""

    __slots__ = ("request_id", "_engine", "_loop", "_queue", "_open")

    def __init__(self, engine: "AsyncEngine", request_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._open = True

    def put(self, item) -> None:
        """Called from the engine thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        if not self._open:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._end(abort=False)
            raise item
        if item.finished:
            self._end(abort=False)
        return item

    def close(self) -> None:
        if self._open:
            self._end(abort=True)

    def _end(self, abort: bool) -> None:
        self._open = False
        self._engine._forget(self.request_id, abort)


def apply_command(core: EngineCore, cmd: tuple, errors: list) -> list[RequestOutput]:
    """Apply an "add", "abort" or "batch" command to `core` (in the engine's own thread or
    process); returns the final outputs of aborted requests, and appends `(request_id, error)` to
    `errors` for adds the core refused."""
    kind, outputs = cmd[0], []
    if kind == "batch":
        for one in cmd[1]:
            outputs += apply_command(core, one, errors)
    elif kind == "add":
        _, rid, ids, params, arrival = cmd
        try:
            core.add_request(rid, ids, params, arrival)
        except ValueError as e:
            errors.append((rid, e))
    elif kind == "abort":
        out = core.abort(cmd[1])
        if out is not None:
            outputs.append(out)
    return outputs


def delivery_order(outputs: list[RequestOutput]) -> list[RequestOutput]:
    """A step's outputs in the order their streams are woken (a server writes their chunks in
    that order, one socket after another): first tokens first, since time to first token is what
    waiting users feel; requests that finished last, since a client that reads its answer often
    sends its next request at once, which is then read after this step's chunks are out rather
    than queued behind them (the engine holds its next step for it: `refill_hold`)."""
    def rank(out: RequestOutput) -> int:
        if out.finished:
            return 2
        first = any(o.delta_token_ids and len(o.token_ids) == len(o.delta_token_ids)
                    for o in out.outputs)
        return 0 if first else 1

    return sorted(outputs, key=rank)


def _hand_over(items: list) -> None:
    for stream, out in items:
        stream._queue.put_nowait(out)


class EngineClient:
    """The event-loop side of an engine: request streams, the batched hand-off (with the burst
    hold) and aborts. Subclasses carry commands to the engine core and outputs back: `AsyncEngine`
    to a thread of this process, `ProcessEngine` (engine/process.py) to a process of its own."""

    def __init__(self, tokenizer, max_model_len: int, vocab_size: int, stats: EngineStats) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self._pending: list[tuple] | None = None  # commands not yet handed off (see _send)
        self._pending_since = 0.0
        self._hand_off: asyncio.Handle | None = None
        self._streams: dict[str, RequestStream] = {}
        self._lock = threading.Lock()
        self._stats = stats
        self._error: BaseException | None = None
        self.hold_limit = 0.0
        """Seconds: the most a lone request at an idle engine is held (`idle_hold`); set from
        `EngineConfig.step_hold_ms` by the subclass."""

    # ---- what a transport provides ----------------------------------------------------------------
    def _post(self, cmd: tuple) -> None:
        """Carry one command ("batch" of adds/aborts, or "abort") to the engine core."""
        raise NotImplementedError

    def _check(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        check_request(prompt_token_ids, params, self.vocab_size, self.max_model_len)

    # ---- public API ---------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        return self._stats

    @property
    def failed(self) -> bool:
        """The engine stopped on an error (not by shutdown)."""
        return self._error is not None

    def submit(self, prompt_token_ids: list[int], params: SamplingParams,
               request_id: str) -> RequestStream:
        """Queue a request for the engine now; its outputs arrive on the returned stream, which
        the caller must iterate to the end or `close()`. Call from the event loop."""
        if self._error is not None:
            raise EngineDeadError(f"engine failed: {self._error}")
        self._check(prompt_token_ids, params)
        stream = RequestStream(self, request_id, asyncio.get_running_loop())
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already running")
            self._streams[request_id] = stream
        self._send(stream._loop, ("add", request_id, list(prompt_token_ids), params,
                                  time.monotonic()))
        return stream

    def _send(self, loop: asyncio.AbstractEventLoop, cmd: tuple) -> None:
        """Queue an add from the event loop: handed off at the next turn (`FIRST_TURNS` at an idle
        engine), or after the burst."""
        now = time.monotonic()
        if self._pending is None:
            self._pending, self._pending_since = [cmd], now
            idle = self._stats.num_running + self._stats.num_waiting == 0
            hold = idle_hold(self._stats, self.hold_limit) if idle else 0.0
            self._hand_off = loop.call_soon(self._flush_in, loop, FIRST_TURNS - 1 if idle else 0,
                                            now + hold)
            return
        self._pending.append(cmd)
        idle = self._stats.num_running + self._stats.num_waiting == 0
        if idle:
            self._hand_off.cancel()
            wait = min(BURST_GAP, self._pending_since + BURST_LIMIT - now)
            self._hand_off = loop.call_later(max(0.0, wait), self._flush)

    def _flush_in(self, loop: asyncio.AbstractEventLoop, turns: int, until: float) -> None:
        """Hand off after `turns` more turns of the loop, and not before `until`."""
        if turns > 0:
            self._hand_off = loop.call_soon(self._flush_in, loop, turns - 1, until)
        elif (left := until - time.monotonic()) > 0:
            self._hand_off = loop.call_later(left, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        batch, self._pending, self._hand_off = self._pending, None, None
        self._post(("batch", batch))

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        stream = self.submit(prompt_token_ids, params, request_id)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def _forget(self, request_id: str, abort: bool) -> None:
        """A stream ended (on the event loop); an early end aborts the request, after its add."""
        with self._lock:
            self._streams.pop(request_id, None)
        if not abort:
            return
        if self._pending is not None:
            self._pending.append(("abort", request_id))
        else:
            self._post(("abort", request_id))

    def _fail_all(self, err: BaseException) -> None:
        """Every request in flight ends with `err` (the engine is gone)."""
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.put(err)


class AsyncEngine(EngineClient):
    """The engine core on a thread of this process."""

    def __init__(self, core: EngineCore) -> None:
        super().__init__(core.tokenizer, core.max_model_len, core.model_config.vocab_size,
                         core.stats())
        self.core = core
        self.hold_limit = core.config.step_hold_ms / 1e3
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llmcell-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "AsyncEngine":
        from llmcell.engine.core import EngineCore

        return cls(EngineCore(config))

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def _post(self, cmd: tuple) -> None:
        self._commands.put(cmd)

    def _check(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.core.check_request(prompt_token_ids, params)

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._commands.put(("stop",))
        self._thread.join(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        self.shutdown(timeout)

    # ---- engine thread ------------------------------------------------------------------------------
    def _handle(self, cmd: tuple) -> None:
        errors: list[tuple[str, ValueError]] = []
        for out in apply_command(self.core, cmd, errors):
            self._deliver(out)
        for rid, err in errors:
            self._deliver_error(rid, err)

    def _deliver(self, out: RequestOutput) -> None:
        with self._lock:
            stream = self._streams.get(out.request_id)
        if stream is not None:
            stream.put(out)

    def _deliver_all(self, outs: list[RequestOutput]) -> None:
        """A step's outputs, handed to each event loop in one wake-up rather than one per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for out in delivery_order(outs):
                stream = self._streams.get(out.request_id)
                if stream is not None:
                    by_loop.setdefault(stream._loop, []).append((stream, out))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_hand_over, items)
            except RuntimeError:  # that loop has closed: nobody is listening any more
                pass

    def _deliver_error(self, rid: str, err: BaseException) -> None:
        with self._lock:
            stream = self._streams.get(rid)
        if stream is not None:
            stream.put(err)

    def _loop(self) -> None:
        hold = 0.0  # seconds to wait for new requests before the next step (see refill_hold)
        expected = 0
        while not self._stopping:
            try:
                block = not self.core.has_work()
                until = time.monotonic() + hold
                while True:
                    wait = 0.5 if block else until - time.monotonic() if expected > 0 else 0.0
                    try:
                        cmd = self._commands.get(block=wait > 0, timeout=wait if wait > 0 else None)
                    except queue.Empty:
                        break
                    if cmd[0] == "stop":
                        return
                    expected -= count_adds([cmd])
                    self._handle(cmd)
                    block = False
                if self.core.has_work():
                    started = time.monotonic()
                    outputs = self.core.step()
                    took = time.monotonic() - started
                    self._deliver_all(outputs)
                    expected = sum(out.finished for out in outputs)
                    hold = refill_hold(expected, took, self.core.stats(),
                                       self.core.config.step_hold_ms / 1e3)
                else:
                    expected, hold = 0, 0.0
                self._stats = self.core.stats()
            except Exception as e:  # a failed step must not leave callers waiting forever
                self._error = e
                self._fail_all(EngineDeadError(f"engine step failed: {e!r}"))
                return
