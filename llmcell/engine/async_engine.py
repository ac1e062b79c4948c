"""Async engine: asyncio callers submit requests and stream their outputs while the engine core
steps elsewhere: on a thread of this process (`AsyncEngine`) or in a process of its own
(`ProcessEngine`, engine/process.py). `EngineClient` is the event-loop side both share; both run
the same engine loop (engine/loop.py) over the same messages (engine/messages.py).

`submit()` validates the request in the caller (so bad input fails at once), queues it for the
engine (the hand-off and its holds: engine/holds.py) and returns a `RequestStream` of
`RequestOutput`s as tokens arrive; closing the stream before it ends (e.g. a client disconnect)
aborts the request, freeing its blocks at the next step boundary. `generate()` is the same as an
async generator that closes its stream itself. A server submits before it starts its response,
so prefill overlaps with sending the headers. The engine never blocks the event loop: a thread's
outputs cross over with `loop.call_soon_threadsafe`, a step's outputs in one wake-up. If a step
raises, every in-flight request fails with that error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import TYPE_CHECKING, AsyncIterator

from llmcell.config.engine import EngineConfig
from llmcell.engine import loop as engine_loop
from llmcell.engine.holds import HandOff
from llmcell.engine.kv_cache.event_log import KVEventLog
from llmcell.engine.messages import (AddRequest, Dead, Outputs, Stop, ToClient, ToCore)
from llmcell.engine.outputs import RequestOutput, Resume
from llmcell.protocol.lora import AdapterRef
from llmcell.protocol.sampling import SamplingParams, check_request
from llmcell.engine.stats import EngineStats

if TYPE_CHECKING:  # torch: only where the core runs (not in a server whose engine is a process)
    from llmcell.engine.core import EngineCore


class EngineDeadError(RuntimeError):
    """The engine failed; requests cannot be served."""


class RequestStream:
    """One submitted request's outputs, in order. Iterate it; `close()` it when done with it (an
    unfinished request is then aborted). Closing twice, or after the end, does nothing."""

    __slots__ = ("request_id", "_engine", "loop", "queue", "_open")

    def __init__(self, engine: "EngineClient", request_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self._engine = engine
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self._open = True

    def put(self, item) -> None:
        """Callable from any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        if not self._open:
            raise StopAsyncIteration
        item = await self.queue.get()
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
    for stream, item in items:
        stream.queue.put_nowait(item)


class EngineClient:
    """The event-loop side of an engine: request streams, the batched hand-off and aborts.
    Subclasses carry messages to the engine core (`_post`) and hand what comes back to
    `_from_core`: `AsyncEngine` to a thread of this process, `ProcessEngine` (engine/process.py)
    to a process of its own."""

    def __init__(self, tokenizer, max_model_len: int, vocab_size: int, stats: EngineStats,
                 block_size: int = 0) -> None:
        self.tokenizer = tokenizer
        self.kv_events = KVEventLog(block_size)
        """The engine's prefix-cache keys, as gateways follow them (KV-aware routing)."""
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self._streams: dict[str, RequestStream] = {}
        self._lock = threading.Lock()
        self._stats = stats
        self._error: BaseException | None = None
        self.hand_off = HandOff(self._post, self.stats)

    def _post(self, message: ToCore) -> None:
        """Carry one message to the engine core (what a transport provides)."""
        raise NotImplementedError

    # ---- public API ---------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        return self._stats

    @property
    def failed(self) -> bool:
        """The engine stopped on an error (not by shutdown)."""
        return self._error is not None

    def submit(self, prompt_token_ids: list[int], params: SamplingParams,
               request_id: str, resume: Resume | None = None,
               adapter: AdapterRef | None = None) -> RequestStream:
        """Queue a request for the engine now; its outputs arrive on the returned stream, which
        the caller must iterate to the end or `close()`. Call from the event loop."""
        if self._error is not None:
            raise EngineDeadError(f"engine failed: {self._error}")
        params = check_request(prompt_token_ids, params, self.vocab_size, self.max_model_len)
        stream = RequestStream(self, request_id, asyncio.get_running_loop())
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already running")
            self._streams[request_id] = stream
        self.hand_off.add(stream.loop, AddRequest(request_id, list(prompt_token_ids), params,
                                                  time.monotonic(), resume, adapter))
        return stream

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str, adapter: AdapterRef | None = None
                       ) -> AsyncIterator[RequestOutput]:
        stream = self.submit(prompt_token_ids, params, request_id, adapter=adapter)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def _forget(self, request_id: str, abort: bool) -> None:
        """A stream ended (on the event loop); an early end aborts the request, after its add."""
        with self._lock:
            self._streams.pop(request_id, None)
        if abort:
            self.hand_off.abort(request_id)

    # ---- what the core sends back (on the event loop, or on the engine's thread) --------------------
    def _from_core(self, message: ToClient) -> None:
        if isinstance(message, Outputs):
            self._stats = message.stats
            self.kv_events.apply(message.kv_events)
            items = []
            with self._lock:
                for out in delivery_order(message.outputs):
                    if (stream := self._streams.get(out.request_id)) is not None:
                        items.append((stream, out))
                for error in message.errors:
                    if (stream := self._streams.get(error.request_id)) is not None:
                        items.append((stream, ValueError(error.message)))
            self._deliver(items)
        elif isinstance(message, Dead):
            self._die(message.message)

    def _deliver(self, items: list[tuple[RequestStream, object]]) -> None:
        """Hand items to their streams: each stream's loop woken once for all of them."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream, item in items:
            by_loop.setdefault(stream.loop, []).append((stream, item))
        here = asyncio._get_running_loop()  # a process engine's messages come on the loop itself
        for loop, group in by_loop.items():
            if loop is here:
                _hand_over(group)
                continue
            try:
                loop.call_soon_threadsafe(_hand_over, group)
            except RuntimeError:  # that loop has closed: nobody is listening any more
                pass

    def _die(self, why: str) -> None:
        """Every request in flight, and every later submit, fails with EngineDeadError(why)."""
        if self._error is None:
            self._error = EngineDeadError(why)
            with self._lock:
                streams = list(self._streams.values())
            for stream in streams:
                stream.put(EngineDeadError(why))


class _ThreadChannel:
    """The engine thread's end: commands on a queue, outputs straight to the client."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self.commands: queue.SimpleQueue = queue.SimpleQueue()

    def receive(self, wait: float) -> list[ToCore]:
        messages: list[ToCore] = []
        try:
            messages.append(self.commands.get(block=wait > 0, timeout=wait if wait > 0 else None))
            while True:
                messages.append(self.commands.get_nowait())
        except queue.Empty:
            return messages

    def send(self, message: ToClient) -> None:
        self.client._from_core(message)


class AsyncEngine(EngineClient):
    """The engine core on a thread of this process."""

    def __init__(self, core: EngineCore) -> None:
        super().__init__(core.tokenizer, core.max_model_len, core.model_config.vocab_size,
                         core.stats(), core.block_manager.block_size)
        self.core = core
        self.hand_off.limit = core.config.step_hold_ms / 1e3
        self._channel = _ThreadChannel(self)
        self._thread = threading.Thread(target=engine_loop.run, args=(core, self._channel),
                                        name="llmcell-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "AsyncEngine":
        from llmcell.engine.core import EngineCore

        return cls(EngineCore(config))

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def _post(self, message: ToCore) -> None:
        self._channel.commands.put(message)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._post(Stop())
        self._thread.join(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        self.shutdown(timeout)
