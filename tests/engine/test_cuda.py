"""The engine on a CUDA GPU (skipped where none is present)."""

from __future__ import annotations

import pytest
import torch

from llmcell.engine import LLM, SamplingParams

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")]


def test_cuda_fp32_matches_cpu(checkpoint, chat_prompt_ids):
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    cpu = LLM(checkpoint=checkpoint, dtype="float32", kv_cache_memory=64 << 20)
    gpu = LLM(checkpoint=checkpoint, dtype="float32", device="cuda", kv_cache_memory=64 << 20)
    want = [o.outputs[0].token_ids for o in cpu.generate(chat_prompt_ids, params)]
    got = [o.outputs[0].token_ids for o in gpu.generate(chat_prompt_ids, params)]
    assert sum(w == g for w, g in zip(want, got)) >= 4


def test_cuda_auto_dtype_is_half_precision_and_coherent(checkpoint):
    llm = LLM(checkpoint=checkpoint, device="cuda", kv_cache_memory=256 << 20)
    assert llm.core.dtype in (torch.bfloat16, torch.float16)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(max_tokens=16, temperature=0.0))[0]
    assert "Paris" in out.outputs[0].text


def test_cuda_int8_and_batching(checkpoint):
    llm = LLM(checkpoint=checkpoint, device="cuda", quantization="int8", kv_cache_memory=256 << 20)
    outs = llm.generate(["Hello"] * 8 + ["Once upon a time"] * 8,
                        SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    assert all(len(o.outputs[0].token_ids) == 8 for o in outs)
