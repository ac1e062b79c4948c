"""A worker of a model-server group: join the group, load the shard of each model the leader
announces, run the leader's steps until it says stop. It answers only /health and /ready (for
its pod's probes): the leader is the group's endpoint and the only member the admin knows."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmcell.config.server import ServerConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.parallel.group import init_group, serve_worker


def _health_server(config: ServerConfig, state: dict) -> None:
    """/health (the process is up) and /ready (joined the group) for the pod's probes."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            ok = self.path == "/health" or (self.path == "/ready" and state["joined"])
            body = json.dumps({"status": "ok" if ok else "waiting", "role": "worker",
                               "rank": config.group.rank, **state}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((config.host, config.port), Health)
    threading.Thread(target=server.serve_forever, name="llmcell-worker-health",
                     daemon=True).start()


def run_worker(config: ServerConfig) -> int:
    g = config.group
    # The leader stops its workers (after draining); a Ctrl-C meant for the whole terminal must
    # not cut a worker out from under a step. SIGTERM ends it quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: _leave(0))
    print(f"llmcell worker {g.rank}/{g.size}: joining the group at {g.leader}:{g.port}...",
          file=sys.stderr, flush=True)
    state = {"joined": False, "model": None}
    _health_server(config, state)
    tp = init_group(g.rank, g.size, g.leader, g.port, g.timeout)
    state["joined"] = True

    def load(model: str):
        core = EngineCore(replace(config.engine_config, model=model), None, tp)
        state["model"] = model
        print(f"llmcell worker {g.rank}/{g.size}: {model}: holding "
              f"{core.model.weight_bytes() / 1e6:.0f} MB of weights "
              f"({core.model.config.num_heads} query heads, {core.model.config.num_kv_heads} KV "
              "heads)", file=sys.stderr, flush=True)
        return core.runner

    _leave(serve_worker(load))
    return 0  # not reached


def _leave(status: int) -> None:
    """Exit without tearing the process group down: the leader that said stop may already be
    gone, and gloo's teardown against a closed peer can abort the process (SIGABRT instead of the
    status). A worker holds nothing that needs closing; the OS closes its sockets."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
