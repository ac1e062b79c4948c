"""Llama-architecture decoder (Llama 2/3, SmolLM, Mistral; optional Qwen2-style QKV bias).

The forward pass takes a flattened batch of tokens from many sequences (decodes and prefill
chunks together), so every linear layer runs once per step for the whole batch. Q, K, V share one
fused projection and gate/up another; rotary embedding is applied to Q and K heads in one pass.
Logits are computed only for the rows the sampler needs.

Precision: matmuls and attention run in the compute dtype; the residual stream, RMS norms and
rotary embeddings stay in fp32 (as vLLM's fused kernels and transformers' RMSNorm do), so a
reduced-precision model rounds once per matmul input instead of at every sum.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from llmcell.engine.models.attention import AttentionMetadata, PagedKVCache, paged_attention
from llmcell.engine.models.config import ModelConfig
from llmcell.engine.models.linear import Linear
from llmcell.engine.parallel.tensor import (TensorParallel, local_config, shard_weights,
                                            split_range, vocab_range)

if TYPE_CHECKING:
    from llmcell.engine.lora.weights import LoraBatch


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    d = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    scaling = dict(config.rope_scaling or ())
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        mid = (wavelen <= old / low) & (wavelen >= old / high)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


class _Layer:
    __slots__ = ("input_norm", "qkv", "o", "post_norm", "gate_up", "down")


class LlamaModel:
    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype,
                 device: torch.device, quantization: str | None = None,
                 tp: TensorParallel | None = None, presharded: bool = False) -> None:
        self.tp = tp if tp is not None and tp.size > 1 else None
        self.full_vocab = config.vocab_size
        self.vocab_range = (0, config.vocab_size)
        self.vocab_sizes = [config.vocab_size]
        if self.tp is not None:  # keep only this rank's slice of every layer
            if presharded:  # the loader sliced each tensor as it arrived
                config, self.vocab_range = (local_config(config, tp.rank, tp.size),
                                            vocab_range(config, tp.rank, tp.size))
            else:
                config, weights, self.vocab_range = shard_weights(config, weights, tp.rank,
                                                                  tp.size)
            self.vocab_sizes = [b - a for a, b in (split_range(self.full_vocab, tp.size, r)
                                                   for r in range(tp.size))]
        self.config = config
        self.dtype = dtype
        self.device = device
        c = config
        self.q_size = c.num_heads * c.head_dim
        self.kv_size = c.num_kv_heads * c.head_dim
        self.scale = c.head_dim ** -0.5

        def norm(name: str) -> torch.Tensor:
            return weights[name].to(device=device, dtype=torch.float32)

        self.embed = weights["embed"].to(device=device, dtype=dtype)
        self.layers: list[_Layer] = []
        for i in range(c.num_layers):
            p = f"layers.{i}."
            layer = _Layer()
            layer.input_norm = norm(p + "input_norm")
            layer.post_norm = norm(p + "post_norm")
            qkv = torch.cat([weights[p + "q"], weights[p + "k"], weights[p + "v"]])
            bias = None
            if c.attention_bias and p + "q_bias" in weights:
                bias = torch.cat([weights[p + "q_bias"], weights[p + "k_bias"], weights[p + "v_bias"]])
            layer.qkv = Linear(qkv, bias, dtype, device, quantization)
            layer.o = Linear(weights[p + "o"], None, dtype, device, quantization)
            gate_up = torch.cat([weights[p + "gate"], weights[p + "up"]])
            layer.gate_up = Linear(gate_up, None, dtype, device, quantization)
            layer.down = Linear(weights[p + "down"], None, dtype, device, quantization)
            self.layers.append(layer)
        self.norm = norm("norm")
        head = weights.get("lm_head", weights["embed"])
        self.lm_head = Linear(head, None, dtype, device, quantization)
        inv = rope_inv_freq(c)
        pos = torch.arange(c.max_position_embeddings, dtype=torch.float64)
        freqs = torch.outer(pos, inv)
        self.cos = freqs.cos().to(device=device, dtype=torch.float32)  # [P, D/2]
        self.sin = freqs.sin().to(device=device, dtype=torch.float32)

    def weight_bytes(self) -> int:
        n = self.embed.numel() * self.embed.element_size()
        for layer in self.layers:
            n += sum(l.nbytes() for l in (layer.qkv, layer.o, layer.gate_up, layer.down))
        if self.lm_head.weight.data_ptr() != self.embed.data_ptr():
            n += self.lm_head.nbytes()
        return n

    @staticmethod
    def _rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """qk: [T, heads, D] in HF's half-split layout; cos/sin: fp32 [T, 1, D/2]. Computed in
        fp32, returned in qk's dtype."""
        half = qk.shape[-1] // 2
        x = qk.float()
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(qk.dtype)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                cache: PagedKVCache, lora: LoraBatch | None = None) -> torch.Tensor:
        """`lora`: the rows that run LoRA adapters (their deltas are added to each projection)."""
        c = self.config
        eps = c.rms_norm_eps
        h = c.hidden_size
        t = input_ids.shape[0]
        act = self.dtype
        x = self._embed(input_ids).float()  # the residual stream, fp32 [T, hidden]
        qk_heads = c.num_heads + c.num_kv_heads
        cos = self.cos[positions].unsqueeze(1)  # gathered once per step, used by every layer
        sin = self.sin[positions].unsqueeze(1)
        for i, layer in enumerate(self.layers):
            y = F.rms_norm(x, (h,), layer.input_norm, eps).to(act)
            qkv = layer.qkv(y)
            if lora is not None:
                qkv = lora.apply(i, "qkv", y, qkv)
            qk = self._rope(qkv[:, : self.q_size + self.kv_size].view(t, qk_heads, c.head_dim),
                            cos, sin)
            q = qk[:, : c.num_heads]
            k = qk[:, c.num_heads :]
            v = qkv[:, self.q_size + self.kv_size :].view(t, c.num_kv_heads, c.head_dim)
            attn = paged_attention(q, k, v, cache.keys[i], cache.values[i], meta, self.scale)
            o = layer.o(attn)
            if lora is not None:
                o = lora.apply(i, "o", attn, o)
            x = x + self._reduce(o).float()
            y = F.rms_norm(x, (h,), layer.post_norm, eps).to(act)
            gu = layer.gate_up(y)
            if lora is not None:
                gu = lora.apply(i, "gate_up", y, gu)
            g, u = gu.chunk(2, dim=-1)
            act_in = F.silu(g) * u
            down = layer.down(act_in)
            if lora is not None:
                down = lora.apply(i, "down", act_in, down)
            x = x + self._reduce(down).float()
        return x

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head for the selected rows (fp32 hidden states); float32 [N, vocab]."""
        y = F.rms_norm(hidden.float(), (self.config.hidden_size,), self.norm,
                       self.config.rms_norm_eps).to(self.dtype)
        logits = self.lm_head(y).float()
        return logits if self.tp is None else self.tp.gather_last(logits, self.vocab_sizes)

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp is None:
            return F.embedding(input_ids, self.embed)
        start, end = self.vocab_range
        outside = (input_ids < start) | (input_ids >= end)
        x = F.embedding((input_ids - start).masked_fill(outside, 0), self.embed)
        return self.tp.all_reduce(x.masked_fill(outside.unsqueeze(-1), 0.0))

    def _reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """Sum the ranks' partial outputs of a row-split projection (identity on one rank)."""
        return partial if self.tp is None else self.tp.all_reduce(partial)
