"""Paged KV cache bookkeeping (pure Python, no torch): blocks, free list, prefix cache."""

from llmcell.engine.kv_cache.block_manager import BlockManager, PrefixCacheStats

__all__ = ["BlockManager", "PrefixCacheStats"]
