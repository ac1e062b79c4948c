"""A worker of a model-server group: join the group, load this rank's shard, run the leader's
steps until it says stop. No HTTP: the leader is the group's only endpoint."""

from __future__ import annotations

import sys

from llmcell.config.server import ServerConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.parallel.group import init_group, leave_group, serve_worker


def run_worker(config: ServerConfig) -> int:
    g = config.group
    print(f"llmcell worker {g.rank}/{g.size}: joining the group at {g.leader}:{g.port}...",
          file=sys.stderr, flush=True)
    tp = init_group(g.rank, g.size, g.leader, g.port, g.timeout)
    try:
        core = EngineCore(config.engine_config, None, tp)
        print(f"llmcell worker {g.rank}/{g.size}: holding {core.model.weight_bytes() / 1e6:.0f} MB "
              f"of weights ({core.model.config.num_heads} query heads, "
              f"{core.model.config.num_kv_heads} KV heads); serving steps", file=sys.stderr,
              flush=True)
        return serve_worker(core.runner)
    finally:
        leave_group()
