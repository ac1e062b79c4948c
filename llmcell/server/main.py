"""Run a model server: build the backend and app from a `ServerConfig`, serve with uvicorn.

SIGTERM (and Ctrl-C) drains: /ready turns 503 and new requests are refused with 503, running
requests finish (up to `drain_timeout`), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import uvicorn

from llmcell.config.server import ServerConfig
from llmcell.server.app import create_app
from llmcell.server.builtin import BuiltinBackend
from llmcell.server.metrics import ServerMetrics
from llmcell.server.upstream import UpstreamBackend


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: we drain first, then ask it to exit."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build(config: ServerConfig):
    metrics = ServerMetrics()
    backend = (BuiltinBackend(config, metrics) if config.engine == "builtin"
               else UpstreamBackend(config, metrics))
    return create_app(config, backend, metrics), backend


async def serve(config: ServerConfig, announce=None) -> None:
    app, backend = build(config)
    state = app.state.server
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                    access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=max(1, int(config.drain_timeout))))
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        if state.draining:
            server.force_exit = True
            return
        state.draining = True
        deadline = time.monotonic() + config.drain_timeout
        while backend.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(drain()))

    async def report() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        if announce:
            announce(f"http://{config.host}:{server.servers[0].sockets[0].getsockname()[1]}")
        while not backend.load().ready and state.start_error is None:
            await asyncio.sleep(0.1)
        if state.start_error is not None:
            print(f"llmcell server: failed to start: {state.start_error}", file=sys.stderr,
                  flush=True)
        elif announce:
            announce(None)

    reporter = asyncio.create_task(report())
    try:
        await server.serve()
    finally:
        reporter.cancel()


def run(config: ServerConfig) -> int:
    # The engine thread and the event loop share the GIL; Python's default 5 ms switch interval
    # would make each arriving request wait for a whole slice of the engine's step.
    sys.setswitchinterval(0.0005)
    def announce(url: str | None) -> None:
        if url:
            print(f"llmcell server: listening on {url} ({config.engine} engine); loading "
                  f"{config.model_name or config.upstream}...", file=sys.stderr, flush=True)
        else:
            print("llmcell server: ready", file=sys.stderr, flush=True)

    asyncio.run(serve(config, announce))
    return 0
