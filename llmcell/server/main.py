"""Run a model server: build the backend and app from a `ServerConfig`, serve with uvicorn.

SIGTERM (and Ctrl-C) drains: /ready turns 503 and new requests are refused with 503, a member of
a cell tells its admin it is leaving (its replicas are placed elsewhere at once: a spot node's
preemption notice), running requests finish (up to `drain_timeout`), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import os
import sys
import time
from dataclasses import replace

import uvicorn

from llmcell.config.server import ServerConfig
from llmcell.protocol.cell import Assignment
from llmcell.server.agent import CellAgent
from llmcell.server.app import create_app
from llmcell.edge.http_protocol import LISTEN_BACKLOG, http_protocol
from llmcell.server.host import ModelHost
from llmcell.server.builtin import BuiltinBackend
from llmcell.server.metrics import ServerMetrics
from llmcell.server.adapters import AdapterBackend
from llmcell.server.upstream import UpstreamBackend


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: we drain first, then ask it to exit."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def make_backend(config: ServerConfig, metrics: ServerMetrics, assignment: Assignment | None = None,
                 host: ModelHost | None = None):
    """A backend for the configured model, or for a replica the admin assigned (a LoRA
    adapter's runs on its base model's engine, in `host`)."""
    if assignment is not None and assignment.base:
        return AdapterBackend(assignment, host, config.adapter_base_timeout)
    if assignment is not None:
        source = assignment.model_path if assignment.checkpoint == "None" else assignment.checkpoint
        engine_config = (replace(config.engine_config, model=source)
                         if config.engine == "builtin" else config.engine_config)
        config = replace(config, served_model_name=assignment.model, engine_config=engine_config)
    if config.engine == "builtin":
        return BuiltinBackend(config, metrics)
    return UpstreamBackend(config, metrics)


def settle_heap() -> None:
    """What the process holds once started (its imports, torch's included, and the model's
    tokenizer and template) lives as long as it does: move it out of the garbage collector's
    scans (`gc.freeze`, as vLLM's server does). A full collection otherwise walks ~190,000 objects,
    ~90 ms here, a pause of every stream now and then."""
    gc.collect()
    gc.freeze()


async def serve(config: ServerConfig, announce=None) -> None:
    metrics = ServerMetrics(enabled=config.metrics)
    host = ModelHost()
    members: list[CellAgent] = []  # the agent, once this server is in a cell

    async def starting() -> None:
        if config.admin is None:
            backend = make_backend(config, metrics)
            host.add(backend)  # answers 503 "loading" until started
            await backend.start()
            for name, path in config.lora_modules:  # checked against the model, loaded once
                adapter = make_backend(config, metrics,
                                       Assignment(name, path, base=backend.model_name), host)
                await adapter.start()
                host.add(adapter)
            settle_heap()
            return
        while not server.started:
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        address = config.advertise or f"{config.security.scheme}://{config.host}:{port}"
        agent = CellAgent(config, host, address, lambda a: make_backend(config, metrics, a, host))
        members.append(agent)
        settle_heap()
        await agent.run()

    app = create_app(config, host, metrics, starting)
    state = app.state.server
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                    access_log=False, lifespan="on", http=http_protocol(),
                                    backlog=LISTEN_BACKLOG,
                                    timeout_graceful_shutdown=max(1, int(config.drain_timeout)),
                                    **config.security.uvicorn_tls()))
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        if state.draining:
            server.force_exit = True
            return
        state.draining = True
        deadline = time.monotonic() + config.drain_timeout
        for agent in members:  # its replicas are placed elsewhere while it drains
            await agent.leave()
        while host.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(drain()))

    async def report() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        if announce:
            announce(f"http://{config.host}:{server.servers[0].sockets[0].getsockname()[1]}")
        while config.admin is None and not host.ready() and state.start_error is None:
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
        if config.group.size > 1:
            _leave_group()


def _leave_group() -> None:
    """A group's leader, stopping: its workers exit 0 (torch.distributed: imported only by
    groups). The group is not torn down: the workers leave as soon as they are told, and gloo's
    teardown against a closed peer can abort the leader (SIGABRT instead of its status), so the
    leader exits without it too (`run`)."""
    from llmcell.engine.parallel.group import group_joined, stop_workers

    if group_joined():
        try:
            stop_workers()
        except RuntimeError:
            pass  # the group is already broken: the workers exit on their own


def run(config: ServerConfig) -> int:
    if config.group.rank > 0:
        from llmcell.server.group_worker import run_worker

        return run_worker(config)
    # The engine thread and the event loop share the GIL; Python's default 5 ms switch interval
    # would make each arriving request wait for a whole slice of the engine's step.
    sys.setswitchinterval(0.0005)
    def announce(url: str | None) -> None:
        if url and config.admin:
            print(f"llmcell server: listening on {url} ({config.engine} engine); joining the "
                  f"cell at {config.admin}...", file=sys.stderr, flush=True)
        elif url:
            print(f"llmcell server: listening on {url} ({config.engine} engine); loading "
                  f"{config.model_name or config.upstream}...", file=sys.stderr, flush=True)
        else:
            print("llmcell server: ready", file=sys.stderr, flush=True)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(config, announce))
    if config.group.size > 1:  # no process-group teardown at exit (see _leave_group)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def event_loop_factory():
    """uvloop where it is installed (Linux, macOS: a faster loop, as uvicorn and vLLM use), else
    asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
