"""The engine core in a process of its own, driven from an event loop (vLLM v1's split).

In one process the HTTP event loop and the engine's step share the GIL: every request read, every
chunk written waits for the step's Python to let go (and the step waits for them). Here the
`ProcessEngine` (the `EngineClient` in the server) keeps the event loop, the chat template and the
tokenizer; a spawned child owns the `EngineCore` (weights, KV cache, scheduler, detokenizer) and
runs the engine loop (engine/loop.py) at a lower CPU priority (SCHED_IDLE, or a `nice`) so that
where they share cores the front end is never kept waiting. The child is a fresh interpreter
running `main()` here with the file descriptor of its end of a private Unix socket pair (not
multiprocessing's spawn, which would re-run the caller's main script); they exchange the messages
of engine/messages.py over it, in its frames: `Configure` first, then `Ready` or `Failed` once the
model has loaded (or not), then the engine loop's traffic.

The parent reads frames on its event loop (no thread, no extra wake-up) and writes through an
asyncio transport (never blocks the loop). If the child dies, every request in flight fails with
`EngineDeadError` and /ready turns 503. The child ignores SIGINT (a Ctrl-C reaches the whole
process group; the parent drains and then stops it) and exits when the parent's socket closes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from llmcell.config.engine import EngineConfig
from llmcell.engine import loop as engine_loop
from llmcell.engine.async_engine import EngineClient, EngineDeadError
from llmcell.engine.cpu_share import set_openmp_spin
from llmcell.engine.messages import (Configure, EngineInfo, Failed, FrameReader, Ready, Stop,
                                     ToClient, ToCore, frame)


# ---- the child --------------------------------------------------------------------------------
class _ChildChannel:
    """The child's blocking end of the socket (an engine loop `Channel`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()

    def send(self, message: ToClient) -> None:
        self.sock.settimeout(None)
        self.sock.sendall(frame(message))

    def receive(self, wait: float) -> list[ToCore] | None:
        messages: list[ToCore] = []
        self.sock.settimeout(max(0.0, wait))
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, socket.timeout):
                return messages
            if not data:
                return None
            messages += self.reader.feed(data)
            self.sock.settimeout(0.0)  # take what else is there, without waiting


def run_engine_process(sock: socket.socket) -> None:
    """The child's main: read the config, load, report, then run the engine loop until told to
    stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _ChildChannel(sock)
    first: list[ToCore] | None = []
    while first == []:
        first = channel.receive(engine_loop.IDLE_WAIT)
    if first is None or not isinstance(first[0], Configure):
        return
    configure = first[0]
    if not (configure.idle and _sched_idle()) and configure.nice:
        os.nice(configure.nice)
    set_openmp_spin(configure.config.omp_spin_count)  # before torch loads libgomp
    from llmcell.engine.core import EngineCore

    try:
        try:
            core = EngineCore(configure.config)
        except Exception as e:
            channel.send(Failed(type(e).__name__, str(e)))
            return
        channel.send(Ready(EngineInfo(core.tokenizer, core.max_model_len,
                                      core.model_config.vocab_size, core.load_seconds,
                                      core.stats())))
        engine_loop.run(core, channel)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nothing left to serve


def _sched_idle() -> bool:
    """This process under SCHED_IDLE: the threads it has now (imports may have started some), and
    those it starts later (torch's compute threads), which inherit it. False where the OS has no
    SCHED_IDLE or refuses it (a sandbox): the caller falls back to nice."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError as e:
        print(f"llmcell engine: SCHED_IDLE refused ({e}); using nice instead", file=sys.stderr)
        return False
    return True


# ---- the parent -------------------------------------------------------------------------------
class _ParentChannel(asyncio.Protocol):
    def __init__(self, engine: "ProcessEngine") -> None:
        self.engine = engine
        self.reader = FrameReader()

    def data_received(self, data: bytes) -> None:
        for message in self.reader.feed(data):
            self.engine._from_core(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine._lost()


class ProcessEngine(EngineClient):
    """An `EngineClient` whose core runs in a spawned child process. Build it with `start()`."""

    def __init__(self, process: subprocess.Popen, ready: asyncio.Future) -> None:
        super().__init__(None, 0, 0, None)
        self._process = process
        self._ready = ready
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self.load_seconds = 0.0

    @classmethod
    async def start(cls, config: EngineConfig, nice: int = 0,
                    idle: bool = False) -> "ProcessEngine":
        """Spawn the engine process and wait until its model is loaded (its progress shows on
        stderr); raises what loading raised (ValueError for a bad model) or EngineDeadError.
        `nice`: how much lower the engine's CPU priority is than the caller's (0-19), so that a
        front end sharing the cores reads requests and writes tokens without waiting for a
        time slice of the engine's threads. `idle`: run it under SCHED_IDLE instead where the OS
        has it (Linux): it then takes only the CPU time the caller leaves, and a waking caller
        gets a core at once rather than after the running engine thread's slice."""
        if not 0 <= nice <= 19:
            raise ValueError(f"nice={nice} must be in [0, 19]")
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])  # where the llmcell package lies
        boot = (f"import sys; sys.path.insert(0, {root!r}); "
                f"from llmcell.engine.process import main; main()")
        try:
            process = subprocess.Popen([sys.executable, "-c", boot, str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()])
        finally:
            theirs.close()
        engine = cls(process, loop.create_future())
        engine._transport, _ = await loop.create_unix_connection(
            lambda: _ParentChannel(engine), sock=ours)
        engine._post(Configure(config, nice, idle))
        try:
            info: EngineInfo = await engine._ready
        except BaseException:
            await engine.aclose()
            raise
        engine.tokenizer, engine.max_model_len = info.tokenizer, info.max_model_len
        engine.vocab_size, engine._stats = info.vocab_size, info.stats
        engine.load_seconds = info.load_seconds
        engine.kv_events.block_size = config.block_size
        engine.hand_off.limit = config.step_hold_ms / 1e3
        return engine

    @property
    def is_alive(self) -> bool:
        return self._process.poll() is None and self._error is None and not self._closing

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _post(self, message: ToCore) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(message))

    def _from_core(self, message: ToClient) -> None:
        if isinstance(message, Ready):
            if not self._ready.done():
                self._ready.set_result(message.info)
        elif isinstance(message, Failed):
            error = ValueError if message.kind == "ValueError" else EngineDeadError
            if not self._ready.done():
                self._ready.set_exception(error(message.message))
        else:
            super()._from_core(message)

    def _lost(self) -> None:
        if not self._closing:
            self._die(f"the engine process exited (pid {self._process.pid})")

    def _die(self, why: str) -> None:
        super()._die(why)
        if not self._ready.done():
            self._ready.set_exception(EngineDeadError(why))

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop the engine process: a stop command, then the socket closes; killed if it has not
        exited within `timeout` seconds."""
        self._closing = True
        if self._transport is not None:
            self._post(Stop())
            self._transport.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._process.wait, timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await loop.run_in_executor(None, self._process.wait)


def main() -> None:
    """Entry of the child: `python -m llmcell.engine.process FD`."""
    run_engine_process(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
