"""Attention over the paged KV cache for a flattened batch of decodes and prefill chunks.

The batch holds single-token rows (decodes) first, then prefill chunks. Decodes, sorted by context
length and split into groups so that short contexts do not pay for the longest one's padding,
gather their blocks straight from the cache (one `index_select` per group and layer) and run as
one batched scaled-dot-product attention per group with a length mask. A prefill chunk that starts at position 0 attends
to its own keys (causal). A chunk that continues a cached prefix reads the paged cache in place
through the native kernel when it is short (`NATIVE_PREFIX_MAX_ROWS`), else gathers its blocks
and uses an offset causal mask. Where the native kernels run, this step's keys and values are
written to the cache in one pass per layer (`write_kv`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class PrefillSpan:
    row: int
    """First row of the chunk in the flattened batch."""
    length: int
    start: int
    """Tokens of context already in the cache before this chunk."""
    block_ids: torch.Tensor | None
    """Blocks covering start + length tokens (None when start == 0)."""
    mask: torch.Tensor | None
    """[length, start + length] bool, True where attention is allowed (None when start == 0 or
    the native kernel reads the prefix: `native_prefix`)."""


@dataclass
class DecodeGroup:
    """Decode rows [row, row + count) of similar context length, attended in one call."""

    row: int
    count: int
    block_tables: torch.Tensor
    """[count, max_blocks] block ids (padded with 0)."""
    mask: torch.Tensor | None
    """[count, 1, 1, max_blocks * block_size] bool: which gathered slots are real context;
    None when every row has exactly `context` tokens."""
    context: int
    """Gathered slots attended to (the first `context` of each row)."""


@dataclass
class NativeDecode:
    """All decode rows [0, count) for the native kernel, which reads the paged cache in place."""

    count: int
    block_tables: torch.Tensor
    """[count, max_blocks] int64 block ids (padded with 0; never read past the length)."""
    context_lens: torch.Tensor
    """[count] int64 tokens to attend to."""


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor
    """[T] cache slot of every token in the batch."""
    decode_groups: list[DecodeGroup]
    prefills: list[PrefillSpan]
    native_decode: NativeDecode | None = None
    kernels: object | None = None
    """The native kernels (engine/kernels/paged_attention.cpp) where they run, else None."""


NATIVE_PREFIX_MAX_ROWS = 4
"""A prefill chunk over a cached prefix runs in the native kernel up to this many rows, reading
the cache in place (a fully cached prompt recomputes only its last token); a longer one gathers
its blocks for SDPA, whose tiled matmuls win from ~8 rows on (figures: bench/README.md)."""


def native_prefix(kernels, rows: int) -> bool:
    """Whether a chunk of `rows` tokens over a cached prefix runs in the native kernel."""
    return kernels is not None and rows <= NATIVE_PREFIX_MAX_ROWS


class PagedKVCache:
    """Per-layer key and value tensors shaped [num_blocks, block_size, kv_heads, head_dim]."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.keys = [_zeros(shape, dtype, device) for _ in range(num_layers)]
        self.values = [_zeros(shape, dtype, device) for _ in range(num_layers)]
        self.num_blocks = num_blocks
        self.block_size = block_size

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeroed cache memory. On CPU numpy's calloc maps zero pages lazily instead of touching
    gigabytes up front (masked slots must hold zeros, not NaN garbage: 0 * NaN = NaN)."""
    if device.type == "cpu" and dtype in (torch.float32, torch.float16):
        np_dtype = np.float32 if dtype == torch.float32 else np.float16
        return torch.from_numpy(np.zeros(shape, dtype=np_dtype))
    if device.type == "cpu" and dtype == torch.bfloat16:
        return torch.from_numpy(np.zeros(shape, dtype=np.int16)).view(torch.bfloat16)
    return torch.zeros(shape, dtype=dtype, device=device)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_cache: torch.Tensor,
                    value_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, KVH, D] for this step's tokens. Returns [T, H * D]."""
    num_blocks, block_size, kv_heads, head_dim = key_cache.shape
    kernels = meta.kernels
    if kernels is not None:
        kernels.write_kv(key_cache, value_cache, meta.slot_mapping, k, v)
    else:
        key_cache.view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, k)
        value_cache.view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, v)
    num_tokens, num_heads, _ = q.shape
    out = torch.empty(num_tokens, num_heads, head_dim, dtype=q.dtype, device=q.device)
    gqa = num_heads != kv_heads

    nd = meta.native_decode
    if nd is not None:
        out[: nd.count] = kernels.paged_decode(q[: nd.count].contiguous(), key_cache,
                                               value_cache, nd.block_tables, nd.context_lens,
                                               scale)
    for g in meta.decode_groups:
        d, rows = g.count, slice(g.row, g.row + g.count)
        ctx = g.block_tables.shape[1] * block_size
        flat = g.block_tables.reshape(-1)
        kk = key_cache.index_select(0, flat).view(d, ctx, kv_heads, head_dim)
        vv = value_cache.index_select(0, flat).view(d, ctx, kv_heads, head_dim)
        if g.mask is None:
            kk, vv = kk[:, : g.context], vv[:, : g.context]
        o = F.scaled_dot_product_attention(
            q[rows].unsqueeze(2), kk.transpose(1, 2), vv.transpose(1, 2),
            attn_mask=g.mask, scale=scale, enable_gqa=gqa)
        out[rows] = o.squeeze(2)

    for span in meta.prefills:
        rows = slice(span.row, span.row + span.length)
        qq = q[rows].transpose(0, 1).unsqueeze(0)
        if span.start > 0 and native_prefix(kernels, span.length):
            out[rows] = kernels.paged_prefix(q[rows].contiguous(), key_cache, value_cache,
                                             span.block_ids, span.start, scale)
            continue
        if span.start == 0:
            kk, vv = k[rows], v[rows]
            o = F.scaled_dot_product_attention(
                qq, kk.transpose(0, 1).unsqueeze(0), vv.transpose(0, 1).unsqueeze(0),
                is_causal=True, scale=scale, enable_gqa=gqa)
        else:
            ctx = span.start + span.length
            kk = key_cache.index_select(0, span.block_ids).view(-1, kv_heads, head_dim)[:ctx]
            vv = value_cache.index_select(0, span.block_ids).view(-1, kv_heads, head_dim)[:ctx]
            o = F.scaled_dot_product_attention(
                qq, kk.transpose(0, 1).unsqueeze(0), vv.transpose(0, 1).unsqueeze(0),
                attn_mask=span.mask, scale=scale, enable_gqa=gqa)
        out[rows] = o.squeeze(0).transpose(0, 1)
    return out.view(num_tokens, num_heads * head_dim)
