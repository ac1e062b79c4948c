"""A worker of a model-server group: join the group, load the shard of each model the leader
announces, run the leader's steps until it says stop. No HTTP: the leader is the group's only
endpoint (and the only member the admin knows)."""

from __future__ import annotations

import signal
import sys
from dataclasses import replace

from llmcell.config.server import ServerConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.parallel.group import init_group, leave_group, serve_worker


def run_worker(config: ServerConfig) -> int:
    g = config.group
    # The leader stops its workers (after draining); a Ctrl-C meant for the whole terminal must
    # not cut a worker out from under a step. SIGTERM ends it quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"llmcell worker {g.rank}/{g.size}: joining the group at {g.leader}:{g.port}...",
          file=sys.stderr, flush=True)
    tp = init_group(g.rank, g.size, g.leader, g.port, g.timeout)

    def load(model: str):
        core = EngineCore(replace(config.engine_config, model=model), None, tp)
        print(f"llmcell worker {g.rank}/{g.size}: {model}: holding "
              f"{core.model.weight_bytes() / 1e6:.0f} MB of weights "
              f"({core.model.config.num_heads} query heads, {core.model.config.num_kv_heads} KV "
              "heads)", file=sys.stderr, flush=True)
        return core.runner

    try:
        return serve_worker(load)
    finally:
        leave_group()
