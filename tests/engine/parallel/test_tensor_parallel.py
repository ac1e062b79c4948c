"""Tensor parallelism over gloo: TP=2 and TP=3 give the single-process engine's greedy tokens and
log-probabilities (fp32), and each rank holds about 1/size of the weights.

Every rank runs its own process (as a group member would) and the same deterministic scheduler;
only the model's collectives cross processes.
"""

from __future__ import annotations

import dataclasses

import json

import pytest
import torch
import torch.multiprocessing as mp

from llmcell.config.engine import EngineConfig
from llmcell.engine.llm import LLM
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.parallel import TensorParallel, split_range
from llmcell.engine.core import EngineCore
from llmcell.engine.parallel.group import announce_load, serve_worker, stop_workers
from tests.conftest import PROMPTS
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow

CONFIG = EngineConfig(dtype="float32", threads=1, kv_cache_memory=64 << 20)
PARAMS = SamplingParams(max_tokens=32, temperature=0.0, logprobs=5)


def run(llm: LLM, logits_file: str) -> dict:
    """Generate, keeping every step's logits (the rows sampled) as the runner returns them."""
    steps = []
    run_model = llm.core.runner.run_model

    def capture(*args):
        logits = run_model(*args)
        if logits is not None:
            steps.append(logits.clone())
        return logits

    llm.core.runner.run_model = capture
    outs = llm.generate([llm.apply_chat_template([{"role": "user", "content": p}])
                         for p in PROMPTS], PARAMS)
    torch.save(steps, logits_file)
    return {"tokens": [o.outputs[0].token_ids for o in outs],
            "logprobs": [[[lp for _, _, lp in t.top] for t in o.outputs[0].logprobs]
                         for o in outs],
            "weight_bytes": llm.core.model.weight_bytes()}


def _rank(rank: int, size: int, port: int, out: str) -> None:
    """Rank 0 leads (schedules, samples, broadcasts steps); the others serve as workers."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=size)
    tp = TensorParallel(rank, size)
    try:
        if rank > 0:
            def load(model: str):
                return EngineCore(dataclasses.replace(CONFIG, model=model), None, tp).runner

            assert serve_worker(load) == 0
            return
        announce_load(CONFIG.model)
        result = run(LLM(config=CONFIG, tp=tp), f"{out}.logits")
        stop_workers()
        result["comm_calls"] = tp.comm_calls
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("single") / "logits")
    return dict(run(LLM(config=CONFIG), path), logits_file=path)


def test_split_range_is_uneven_and_covers_everything():
    assert [split_range(3, 2, r) for r in range(2)] == [(0, 2), (2, 3)]
    assert [split_range(1536, 3, r) for r in range(3)] == [(0, 512), (512, 1024), (1024, 1536)]
    with pytest.raises(ValueError, match="rank=2"):
        split_range(4, 2, 2)


@pytest.mark.parametrize("size", [2, 3])
def test_tp_matches_one_process(size, single, tmp_path):
    out = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(size, free_port(), out), nprocs=size, join=True,
                       start_method="spawn")
    leader = json.loads(open(f"{out}.0").read())
    assert leader["tokens"] == single["tokens"]  # token-identical
    ours, want = torch.load(f"{out}.logits"), torch.load(single["logits_file"])
    assert len(ours) == len(want) >= 32  # every step, all 5 prompts batched
    worst = max((a - b).abs().max().item() for a, b in zip(ours, want))
    print(f"TP={size}: largest logit difference over {len(ours)} steps: {worst:.2e}")
    assert worst < 1e-4
    for got, want in zip(leader["logprobs"], single["logprobs"]):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
    assert leader["comm_calls"] > 0  # the steps really went through the group
    share = leader["weight_bytes"] / single["weight_bytes"]
    print(f"TP={size}: the leader holds {share:.3f} of the single-process weight bytes")
    assert share < 1.0 / size + 0.08, share
