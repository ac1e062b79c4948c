"""A model-server group: one leader and (size - 1) workers, one rank each of a gloo/NCCL group.

Only the leader schedules. `LeaderRunner` runs a step like `ModelRunner`, but first broadcasts the
step's model inputs (token ids, positions, attention metadata, the rows to sample) to the workers;
`serve_worker` is a worker's whole life: load the shard of the model the leader announces, run
each step it broadcasts (the collectives inside meet the leader's), unload when told, until the
leader says stop or the group breaks. Workers never sample: the leader owns the scheduler, the
sampler and every request. One model at a time per group.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import timedelta
from typing import Callable

import torch

from llmcell.engine.models.attention import AttentionMetadata
from llmcell.engine.parallel.liveness import start_beating, watch
from llmcell.engine.parallel.tensor import TensorParallel
from llmcell.engine.runner import ModelRunner

STOP = "stop"


IDLE_LIMIT = timedelta(days=7)
"""How long a collective may wait: a worker waits for the leader's next step through idle hours;
a dead member is found by the heartbeats (liveness.py), not by this timeout."""


def init_group(rank: int, size: int, leader: str, port: int, timeout_s: float = 60.0,
               on_dead: Callable[[int], None] | None = None) -> TensorParallel:
    """Join the group's process group (the leader hosts the rendezvous on `port`) and start the
    heartbeats: workers beat, the leader calls `on_dead(rank)` when one stops for `timeout_s`."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if rank == 0 and size > 1:
        watch(leader, port, size, timeout_s, on_dead or _exit_on_dead)
    torch.distributed.init_process_group(
        backend, init_method=f"tcp://{leader}:{port}", rank=rank, world_size=size,
        timeout=IDLE_LIMIT)
    if rank > 0:
        start_beating(leader, port, size, rank, timeout_s)
    return TensorParallel(rank, size)


def _exit_on_dead(rank: int) -> None:
    """A group is one replica: without a member it cannot serve. The leader exits so that the
    whole group restarts together (as LeaderWorkerSet's RecreateGroupOnPodRestart does); clients
    of requests in flight see the connection drop and the gateway retries them elsewhere."""
    print(f"llmcell server: group member {rank} stopped answering; leaving so the group restarts",
          file=sys.stderr, flush=True)
    os._exit(3)


def group_joined() -> bool:
    return torch.distributed.is_initialized()


def join_group(rank: int, size: int, leader: str, port: int, timeout_s: float = 60.0
               ) -> TensorParallel:
    """The process group, joined on first use (a leader keeps it across model loads)."""
    if not group_joined():
        return init_group(rank, size, leader, port, timeout_s)
    return TensorParallel(rank, size)


def _send(message) -> None:
    if group_joined():  # after the group was left (process exit), there is no one to tell
        torch.distributed.broadcast_object_list([message], src=0)


def _receive():
    box = [None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _portable(meta: AttentionMetadata) -> AttentionMetadata:
    """The metadata without the leader's native kernels (a module does not travel; each rank
    loads its own, under the same config)."""
    return meta if meta.kernels is None else dataclasses.replace(meta, kernels=None)


class LeaderRunner(ModelRunner):
    def run_model(self, input_ids, positions, meta, sample_idx, lora=None):
        _send(("step", input_ids, positions, _portable(meta), sample_idx))
        return super().run_model(input_ids, positions, meta, sample_idx)


def announce_load(model: str) -> None:
    """Leader: the workers load their shard of `model` now (as the leader loads its own)."""
    _send(("load", model))


def announce_unload() -> None:
    _send(("unload",))


def stop_workers() -> None:
    _send(STOP)


def serve_worker(load: Callable[[str], ModelRunner]) -> int:
    """A worker's life: load the shards the leader announces, run its steps, until it says stop
    (exit status 0) or the group breaks (1)."""
    runner: ModelRunner | None = None
    steps = 0
    while True:
        try:
            message = _receive()
        except RuntimeError as e:  # the leader (or another member) is gone
            print(f"llmcell worker: group broken after {steps} steps: {e}", file=sys.stderr,
                  flush=True)
            return 1
        if message == STOP:
            return 0
        kind = message[0]
        if kind == "load":
            runner = None  # free the previous shard first
            runner = load(message[1])
        elif kind == "unload":
            runner = None
        elif kind == "step":
            _, input_ids, positions, meta, sample_idx = message
            meta = dataclasses.replace(meta, kernels=runner.kernels)  # see _portable
            with torch.inference_mode():
                runner.run_model(input_ids, positions, meta, sample_idx)
            steps += 1
