"""Tensor-parallel sharding of a Llama-architecture model over a torch.distributed group.

Each rank keeps a slice of every layer (Megatron-style):
- attention by KV-head groups: rank r holds a contiguous run of KV heads (uneven splits allowed,
  e.g. 3 KV heads on 2 ranks -> 2 + 1) and the query heads that attend to them, so attention needs
  no communication; the output projection is split by its input columns and summed (all-reduce);
- the MLP: gate/up split by output rows, down by input columns, summed (all-reduce);
- embeddings and the LM head split by vocabulary: a token's embedding row lives on one rank (the
  others contribute zeros to an all-reduce); logits are gathered along the vocabulary.
`shard_weights` slices a full checkpoint into one rank's part and the shape that part has; the
model calls `TensorParallel` for the three collectives. Rank 0 of a size-1 group is the identity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from llmcell.engine.models.config import ModelConfig


def split_range(n: int, size: int, rank: int) -> tuple[int, int]:
    """[start, end) of rank's share of n items; the first n % size ranks get one more."""
    if not 0 <= rank < size:
        raise ValueError(f"rank={rank} is not in [0, {size})")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class TensorParallel:
    rank: int
    size: int
    group: object = None
    """A torch.distributed process group (None: the default group)."""
    comm_seconds: float = 0.0
    """Time spent in collectives so far (benchmarks read it)."""
    comm_calls: int = 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            start = time.perf_counter()
            torch.distributed.all_reduce(x, group=self.group)
            self.comm_seconds += time.perf_counter() - start
            self.comm_calls += 1
        return x

    def gather_last(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Concatenate every rank's x along the last dim (ranks may hold different widths)."""
        if self.size == 1:
            return x
        width = max(sizes)
        pad = width - x.shape[-1]
        padded = torch.nn.functional.pad(x, (0, pad)) if pad else x.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        start = time.perf_counter()
        torch.distributed.all_gather(parts, padded, group=self.group)
        self.comm_seconds += time.perf_counter() - start
        self.comm_calls += 1
        return torch.cat([p[..., :n] for p, n in zip(parts, sizes)], dim=-1)


def _rows(w: torch.Tensor, start: int, end: int) -> torch.Tensor:
    return w[start:end].contiguous()


def _cols(w: torch.Tensor, start: int, end: int) -> torch.Tensor:
    return w[:, start:end].contiguous()


def _ranges(config: ModelConfig, rank: int, size: int):
    if config.num_kv_heads < size:
        raise ValueError(f"tensor_parallel_size={size} is more than the model's "
                         f"{config.num_kv_heads} KV heads")
    group = config.num_heads // config.num_kv_heads
    kv0, kv1 = split_range(config.num_kv_heads, size, rank)
    return ((kv0 * group, kv1 * group), (kv0, kv1),
            split_range(config.intermediate_size, size, rank),
            split_range(config.vocab_size, size, rank))


def local_config(config: ModelConfig, rank: int, size: int) -> ModelConfig:
    """The shape of one rank's shard."""
    (q0, q1), (kv0, kv1), (f0, f1), _ = _ranges(config, rank, size)
    return replace(config, num_heads=q1 - q0, num_kv_heads=kv1 - kv0, intermediate_size=f1 - f0)


def vocab_range(config: ModelConfig, rank: int, size: int) -> tuple[int, int]:
    return split_range(config.vocab_size, size, rank)


def shard_tensor(config: ModelConfig, name: str, w: torch.Tensor, rank: int,
                 size: int) -> torch.Tensor:
    """Rank's slice of one checkpoint tensor (named as the loader names them). The loader calls
    this as each tensor arrives, so a rank never holds the whole model."""
    (q0, q1), (kv0, kv1), (f0, f1), (v0, v1) = _ranges(config, rank, size)
    d = config.head_dim
    key = name.rsplit(".", 1)[-1]
    if key in ("q", "q_bias"):
        return _rows(w, q0 * d, q1 * d)
    if key in ("k", "v", "k_bias", "v_bias"):
        return _rows(w, kv0 * d, kv1 * d)
    if key == "o":
        return _cols(w, q0 * d, q1 * d)
    if key in ("gate", "up"):
        return _rows(w, f0, f1)
    if key == "down":
        return _cols(w, f0, f1)
    if name in ("embed", "lm_head"):
        return _rows(w, v0, v1)
    return w  # norms: every rank needs them whole


def shard_weights(config: ModelConfig, weights: dict[str, torch.Tensor], rank: int,
                  size: int) -> tuple[ModelConfig, dict[str, torch.Tensor], tuple[int, int]]:
    """One rank's shape, weights and vocabulary range [start, end), from a whole checkpoint."""
    out = {name: shard_tensor(config, name, w, rank, size) for name, w in weights.items()}
    return local_config(config, rank, size), out, vocab_range(config, rank, size)
