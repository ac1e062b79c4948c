"""A model-server group: one leader and (size - 1) workers, one rank each of a gloo/NCCL group.

Only the leader schedules. `LeaderRunner` runs a step like `ModelRunner`, but first broadcasts the
step's model inputs (token ids, positions, attention metadata, the rows to sample) to the workers;
`serve_worker` is a worker's whole life: receive a step, run its shard of the model (the
collectives inside meet the leader's), until the leader says stop or the group breaks. Workers
never sample: the leader owns the scheduler, the sampler and every request.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta

import torch

from llmcell.engine.models.attention import AttentionMetadata
from llmcell.engine.parallel.tensor import TensorParallel
from llmcell.engine.runner import ModelRunner

STOP = "stop"


def init_group(rank: int, size: int, leader: str, port: int,
               timeout_s: float = 60.0) -> TensorParallel:
    """Join the group's process group (the leader hosts the rendezvous on `port`)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(
        backend, init_method=f"tcp://{leader}:{port}", rank=rank, world_size=size,
        timeout=timedelta(seconds=timeout_s))
    return TensorParallel(rank, size)


def leave_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _send(message) -> None:
    torch.distributed.broadcast_object_list([message], src=0)


def _receive():
    box = [None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _portable(meta: AttentionMetadata) -> AttentionMetadata:
    """The metadata without the leader's native-kernel handle (each rank has its own)."""
    if meta.native_decode is None:
        return meta
    return dataclasses.replace(meta, native_decode=dataclasses.replace(meta.native_decode,
                                                                        kernel=None))


class LeaderRunner(ModelRunner):
    def run_model(self, input_ids, positions, meta, sample_idx):
        _send(("step", input_ids, positions, _portable(meta), sample_idx))
        return super().run_model(input_ids, positions, meta, sample_idx)

    def stop_workers(self) -> None:
        _send(STOP)


def serve_worker(runner: ModelRunner) -> int:
    """Run the leader's steps on this rank's shard until told to stop; the exit status."""
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
        _, input_ids, positions, meta, sample_idx = message
        if meta.native_decode is not None:
            meta = dataclasses.replace(meta, native_decode=dataclasses.replace(
                meta.native_decode, kernel=runner.decode_kernel))
        with torch.inference_mode():
            runner.run_model(input_ids, positions, meta, sample_idx)
        steps += 1
