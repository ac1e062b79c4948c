"""The engine against Hugging Face transformers on the same dequantized weights, in fp32."""

from __future__ import annotations

import pytest
import torch

from llmcell.engine import LLM, SamplingParams
from llmcell.engine.scheduler.plan import ScheduledChunk, SchedulerPlan
from llmcell.engine.sequence import Sequence

transformers = pytest.importorskip("transformers")
from tests.engine.hf_reference import build_hf_model  # noqa: E402

NEW_TOKENS = 32


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    return build_hf_model(checkpoint)


@pytest.fixture(scope="module")
def llm_fp32(checkpoint):
    return LLM(checkpoint=checkpoint, dtype="float32", kv_cache_memory=256 << 20)


@pytest.fixture(scope="module")
def hf_greedy(hf_model, chat_prompt_ids):
    outs = []
    with torch.inference_mode():
        for ids in chat_prompt_ids:
            out = hf_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)
            outs.append(out[0, len(ids):].tolist())
    return outs


def test_greedy_tokens_identical_to_transformers(llm_fp32, chat_prompt_ids, hf_greedy):
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    ours = llm_fp32.generate(chat_prompt_ids, params)
    for i, (o, ref) in enumerate(zip(ours, hf_greedy)):
        assert o.outputs[0].token_ids == ref, f"prompt {i} diverged from transformers"


def _full_logits(llm: LLM, token_ids: list[int], chunks: list[int]) -> torch.Tensor:
    """Our logits for every position, computed as a prefill split into the given chunk sizes."""
    core = llm.core
    seq = Sequence(10**9, "logits", 0, list(token_ids), SamplingParams())
    assert core.block_manager.allocate_slots(seq, len(token_ids))
    rows, start = [], 0
    try:
        for n in chunks:
            plan = SchedulerPlan([ScheduledChunk(seq, start, n, start + n == len(token_ids))])
            rows.append(core.runner.forward_logits(plan))
            start += n
    finally:
        core.block_manager.free(seq)
    return torch.cat(rows)


def test_logits_match_transformers(llm_fp32, hf_model, chat_prompt_ids, hf_greedy):
    for ids, gen in zip(chat_prompt_ids, hf_greedy):
        full = ids + gen
        with torch.inference_mode():
            ref = hf_model(torch.tensor([full])).logits[0].float()
        ours = _full_logits(llm_fp32, full, [len(full)])
        assert (ours - ref).abs().max().item() < 1e-3
        # the same sequence prefilled in chunks reads its earlier chunks from the paged cache
        third = len(full) // 3
        chunked = _full_logits(llm_fp32, full, [third, third, len(full) - 2 * third])
        assert (chunked - ref).abs().max().item() < 1e-3


def test_decode_logprobs_match_transformers(llm_fp32, hf_model, chat_prompt_ids, hf_greedy):
    """Logprobs sampled token by token (decode path) equal the reference's at each position."""
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True, logprobs=2)
    ours = llm_fp32.generate(chat_prompt_ids[:2], params)
    for ids, gen, out in zip(chat_prompt_ids, hf_greedy, ours):
        full = ids + gen
        with torch.inference_mode():
            ref = torch.log_softmax(hf_model(torch.tensor([full])).logits[0].float(), -1)
        for j, lp in enumerate(out.outputs[0].logprobs):
            pos = len(ids) - 1 + j
            assert lp.token_id == gen[j]
            assert abs(lp.logprob - ref[pos, gen[j]].item()) < 1e-3
            assert [t for t, _, _ in lp.top] == ref[pos].topk(2).indices.tolist()
