"""Async engine: the engine core runs in its own thread; asyncio callers stream its outputs.

`generate()` validates the request in the caller (so bad input fails at once), queues it for the
engine thread and yields `RequestOutput`s as tokens arrive. `abort()` (also triggered when the
consumer stops iterating, e.g. a client disconnect) frees the request's blocks at the next step
boundary. The engine thread never blocks the event loop: outputs cross over with
`loop.call_soon_threadsafe`. If a step raises, every in-flight request fails with that error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import AsyncIterator

from llmcell.config.engine import EngineConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.outputs import RequestOutput
from llmcell.engine.params import SamplingParams
from llmcell.engine.stats import EngineStats


class EngineDeadError(RuntimeError):
    """The engine thread failed; requests cannot be served."""


class _Stream:
    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class AsyncEngine:
    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.tokenizer = core.tokenizer
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._stats = core.stats()
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llmcell-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "AsyncEngine":
        return cls(EngineCore(config))

    # ---- public API ---------------------------------------------------------------------------------
    @property
    def max_model_len(self) -> int:
        return self.core.max_model_len

    def stats(self) -> EngineStats:
        return self._stats

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    @property
    def failed(self) -> bool:
        """The engine thread stopped on an error (not by shutdown)."""
        return self._error is not None

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        if self._error is not None:
            raise EngineDeadError(f"engine failed: {self._error}")
        self.core.check_request(prompt_token_ids, params)
        stream = _Stream(asyncio.get_running_loop())
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already running")
            self._streams[request_id] = stream
        self._commands.put(("add", request_id, list(prompt_token_ids), params, time.monotonic()))
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not finished:
                self._commands.put(("abort", request_id))

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._commands.put(("stop",))
        self._thread.join(timeout)

    # ---- engine thread ------------------------------------------------------------------------------
    def _handle(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "add":
            _, rid, ids, params, arrival = cmd
            try:
                self.core.add_request(rid, ids, params, arrival)
            except ValueError as e:
                self._deliver_error(rid, e)
        elif kind == "abort":
            out = self.core.abort(cmd[1])
            if out is not None:
                self._deliver(out)

    def _deliver(self, out: RequestOutput) -> None:
        with self._lock:
            stream = self._streams.get(out.request_id)
        if stream is not None:
            stream.put(out)

    def _deliver_error(self, rid: str, err: BaseException) -> None:
        with self._lock:
            stream = self._streams.get(rid)
        if stream is not None:
            stream.put(err)

    def _loop(self) -> None:
        while not self._stopping:
            try:
                block = not self.core.has_work()
                while True:
                    try:
                        cmd = self._commands.get(block=block, timeout=0.5 if block else None)
                    except queue.Empty:
                        break
                    if cmd[0] == "stop":
                        return
                    self._handle(cmd)
                    block = False
                if self.core.has_work():
                    for out in self.core.step():
                        self._deliver(out)
                self._stats = self.core.stats()
            except Exception as e:  # a failed step must not leave callers waiting forever
                self._error = e
                with self._lock:
                    streams = list(self._streams.items())
                for rid, stream in streams:
                    stream.put(EngineDeadError(f"engine step failed: {e!r}"))
                return
