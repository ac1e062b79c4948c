"""The native paged decode kernel against PyTorch's attention on the same cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcell.engine import LLM, SamplingParams
from llmcell.engine.kernels.build import paged_decode_kernel

kernel = paged_decode_kernel()
pytestmark = pytest.mark.skipif(kernel is None, reason="the native kernel cannot be built here")


def reference(q, kc, vc, tables, lens, bs, scale):
    out = []
    kvh, hd = kc.shape[2], kc.shape[3]
    for d in range(q.shape[0]):
        n = int(lens[d])
        pos = torch.arange(n)
        slots = tables[d, pos // bs] * bs + pos % bs
        k = kc.view(-1, kvh, hd)[slots].transpose(0, 1)
        v = vc.view(-1, kvh, hd)[slots].transpose(0, 1)
        out.append(F.scaled_dot_product_attention(q[d].unsqueeze(1), k, v, scale=scale,
                                                  enable_gqa=True).squeeze(1))
    return torch.stack(out)


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (8, 8), (4, 1)])
def test_matches_sdpa_on_scattered_blocks(heads, kv_heads):
    torch.manual_seed(0)
    bs, nb, hd = 16, 64, 64
    lens = torch.tensor([1, 15, 16, 17, 100, 250])
    q = torch.randn(len(lens), heads, hd)
    kc, vc = torch.randn(nb, bs, kv_heads, hd), torch.randn(nb, bs, kv_heads, hd)
    tables = torch.zeros(len(lens), 16, dtype=torch.long)
    perm = torch.randperm(nb)
    used = 0
    for d, n in enumerate(lens.tolist()):
        blocks = -(-n // bs)
        tables[d, :blocks] = perm[used : used + blocks]
        used += blocks
    out = kernel(q, kc, vc, tables, lens, 0.125)
    assert (out - reference(q, kc, vc, tables, lens, bs, 0.125)).abs().max().item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_reads_widen_to_fp32(dtype):
    """bf16/fp16 caches: the same as fp32 attention over the same rounded values, to within the
    output's own rounding."""
    torch.manual_seed(1)
    bs, nb, hd, heads, kv_heads = 16, 32, 64, 9, 3
    lens = torch.tensor([1, 17, 130])
    q = torch.randn(len(lens), heads, hd).to(dtype)
    kc, vc = (torch.randn(nb, bs, kv_heads, hd).to(dtype) for _ in range(2))
    tables = torch.randperm(nb)[: 3 * 9].view(3, 9)
    out = kernel(q, kc, vc, tables, lens, 0.125)
    assert out.dtype == dtype
    want = reference(q.float(), kc.float(), vc.float(), tables, lens, bs, 0.125)
    assert ((out.float() - want).norm() / want.norm()).item() < 0.01


def test_engine_text_is_the_same_with_either_backend(checkpoint, chat_prompt_ids):
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    native = LLM(checkpoint=checkpoint, dtype="float32", attention_backend="native",
                 kv_cache_memory=64 << 20)
    torch_path = LLM(checkpoint=checkpoint, dtype="float32", attention_backend="torch",
                     kv_cache_memory=64 << 20)
    assert native.core.runner.decode_kernel is not None
    assert torch_path.core.runner.decode_kernel is None
    a = [o.outputs[0].token_ids for o in native.generate(chat_prompt_ids, params)]
    b = [o.outputs[0].token_ids for o in torch_path.generate(chat_prompt_ids, params)]
    assert a == b
