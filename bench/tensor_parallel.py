"""Tensor parallelism over gloo on this machine: step latency and collective time, TP=1, 2, 3.

Each TP size runs as that many processes (one per rank, one CPU thread each) generating greedily
for a batch of chat prompts with the built-in engine; rank 0 reports the mean step latency, the
time its collectives (all-reduce, all-gather) took per step, and each rank's weight bytes and
resident memory after loading (each rank reads only its slice of every tensor) and at its peak. Correctness is the test suite's job (tests/engine/parallel); on 2 cores speed is
not the point, the communication share is.

    .venv/bin/python bench/tensor_parallel.py [--sizes 1 2 3] [--batch 8] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace

import torch
import torch.multiprocessing as mp

from llmcell.config.engine import EngineConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.llm import LLM
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.parallel import TensorParallel
from llmcell.engine.parallel.group import announce_load, serve_worker, stop_workers
from llmcell.local_cell import free_port

PROMPT = "Write a short paragraph about rivers, mountains and the sea."


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def _rank(rank: int, size: int, port: int, out: str, batch: int, tokens: int) -> None:
    """Rank 0 leads (schedules, samples, broadcasts each step); the others serve as workers."""
    config = EngineConfig(dtype="float32", threads=1, kv_cache_memory=128 << 20)
    if size > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                             rank=rank, world_size=size)
    tp = TensorParallel(rank, size)
    stats: dict = {}
    if rank > 0:
        cores = []

        def load(model: str):
            core = EngineCore(replace(config, model=model), None, tp)
            cores.append(core)
            stats.update(weight_bytes=core.model.weight_bytes(), rss=_rss())
            return core.runner

        serve_worker(load)
    else:
        if size > 1:
            announce_load(config.model)
        llm = LLM(config=config, tp=tp if size > 1 else None)
        stats.update(weight_bytes=llm.core.model.weight_bytes(), rss=_rss())
        prompt = llm.apply_chat_template([{"role": "user", "content": PROMPT}])
        llm.generate([prompt] * 2, SamplingParams(max_tokens=4))  # warm up
        tp.comm_seconds, tp.comm_calls = 0.0, 0
        steps_before = llm.core._steps
        start = time.perf_counter()
        llm.generate([prompt] * batch, SamplingParams(max_tokens=tokens, temperature=0.0,
                                                      ignore_eos=True))
        stats.update(seconds=time.perf_counter() - start, steps=llm.core._steps - steps_before,
                     comm=tp.comm_seconds, calls=tp.comm_calls)
        if size > 1:
            stop_workers()
    stats["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(f"{out}.{rank}", "w") as f:
        json.dump(stats, f)
    if size > 1:
        torch.distributed.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    print(f"{'TP':>3} {'step ms':>8} {'comm ms/step':>13} {'comm %':>7} {'collectives/step':>17} "
          f"{'weights MB/rank':>16} {'RSS MB/rank':>12} {'peak RSS MB/rank':>17}")
    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes:
            out = f"{d}/tp{size}"
            mp.start_processes(_rank, args=(size, free_port("127.0.0.1"), out, args.batch,
                                            args.tokens), nprocs=size, join=True,
                               start_method="spawn")
            ranks = [json.load(open(f"{out}.{r}")) for r in range(size)]
            r0 = ranks[0]
            step = r0["seconds"] / r0["steps"] * 1000
            comm = r0["comm"] / r0["steps"] * 1000
            weights = "/".join(f"{r['weight_bytes'] / 1e6:.0f}" for r in ranks)
            rss = "/".join(f"{r['rss'] / 1e6:.0f}" for r in ranks)
            peak = "/".join(f"{r['peak'] / 1e6:.0f}" for r in ranks)
            print(f"{size:>3} {step:>8.1f} {comm:>13.2f} {comm / step:>7.1%} "
                  f"{r0['calls'] / r0['steps']:>17.0f} {weights:>16} {rss:>12} {peak:>17}",
                  flush=True)


if __name__ == "__main__":
    main()
