"""Tensor parallelism: shard a model across the ranks of a torch.distributed group."""

from llmcell.engine.parallel.tensor import TensorParallel, shard_weights, split_range

__all__ = ["TensorParallel", "shard_weights", "split_range"]
