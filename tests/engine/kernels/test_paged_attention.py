"""The native paged-attention kernels against PyTorch on the same cache: decode rows, a prefill
chunk over a cached prefix, and the fused write of a step's keys and values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcell.engine import LLM, SamplingParams
from llmcell.engine.kernels.build import paged_attention_kernels

kernels = paged_attention_kernels()
pytestmark = pytest.mark.skipif(kernels is None, reason="the native kernels cannot be built here")
kernel = kernels.paged_decode if kernels is not None else None


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


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.01)])
@pytest.mark.parametrize("start,rows", [(1, 1), (16, 5), (37, 64), (200, 33)])
def test_a_chunk_over_a_cached_prefix_matches_a_gather_with_an_offset_causal_mask(dtype, tol,
                                                                                  start, rows):
    torch.manual_seed(2)
    bs, nb, hd, heads, kv_heads = 16, 40, 64, 9, 3
    ctx = start + rows
    kc, vc = (torch.randn(nb, bs, kv_heads, hd).to(dtype) for _ in range(2))
    table = torch.randperm(nb)[: -(-ctx // bs)]
    q = torch.randn(rows, heads, hd).to(dtype)
    out = kernels.paged_prefix(q, kc, vc, table, start, 0.125)
    k = kc.index_select(0, table).view(-1, kv_heads, hd)[:ctx].float()
    v = vc.index_select(0, table).view(-1, kv_heads, hd)[:ctx].float()
    mask = torch.arange(ctx).unsqueeze(0) <= torch.arange(start, ctx).unsqueeze(1)
    want = F.scaled_dot_product_attention(
        q.float().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
        scale=0.125, enable_gqa=True).transpose(0, 1)
    assert out.dtype == dtype
    assert ((out.float() - want).norm() / want.norm()).item() < tol


def test_a_block_table_too_short_for_the_chunk_is_refused():
    kc = vc = torch.zeros(4, 16, 1, 8)
    with pytest.raises(RuntimeError, match="does not cover"):
        kernels.paged_prefix(torch.zeros(10, 1, 8), kc, vc, torch.tensor([0]), 10, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_write_kv_matches_index_copy(dtype):
    torch.manual_seed(3)
    shape = (8, 16, 3, 64)
    kc, vc = (torch.randn(shape).to(dtype) for _ in range(2))
    want_k, want_v = kc.clone(), vc.clone()
    slots = torch.tensor([5, 17, 18, 127, 64])
    k, v = (torch.randn(len(slots), 3, 64).to(dtype) for _ in range(2))
    kernels.write_kv(kc, vc, slots, k, v)
    want_k.view(-1, 3, 64).index_copy_(0, slots, k)
    want_v.view(-1, 3, 64).index_copy_(0, slots, v)
    assert torch.equal(kc, want_k) and torch.equal(vc, want_v)
    with pytest.raises(RuntimeError, match="slot out of range"):
        kernels.write_kv(kc, vc, torch.tensor([128]), k[:1], v[:1])


def test_engine_text_is_the_same_with_either_backend(checkpoint, chat_prompt_ids):
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    native = LLM(checkpoint=checkpoint, dtype="float32", attention_backend="native",
                 kv_cache_memory=64 << 20)
    torch_path = LLM(checkpoint=checkpoint, dtype="float32", attention_backend="torch",
                     kv_cache_memory=64 << 20)
    assert native.core.runner.kernels is not None
    assert torch_path.core.runner.kernels is None
    a = [o.outputs[0].token_ids for o in native.generate(chat_prompt_ids, params)]
    b = [o.outputs[0].token_ids for o in torch_path.generate(chat_prompt_ids, params)]
    assert a == b

    # Prompts two tokens past a cached block: the chunk after the cached prefix is 2 rows, which
    # the native path attends through paged_prefix (the torch path gathers); the text is the same.
    class Counting:
        def __init__(self, module) -> None:
            self.module, self.rows = module, []

        def __getattr__(self, name):
            return getattr(self.module, name)

        def paged_prefix(self, q, *rest):
            self.rows.append(q.shape[0])
            return self.module.paged_prefix(q, *rest)

    native.core.runner.kernels = counting = Counting(native.core.runner.kernels)
    prompts = [ids[:34] for ids in chat_prompt_ids if len(ids) >= 34]
    assert prompts
    a = [o.outputs[0].token_ids for o in native.generate(prompts, params)]
    b = [o.outputs[0].token_ids for o in torch_path.generate(prompts, params)]
    assert set(counting.rows) == {2} and a == b
