"""Block manager: owns the KV cache's blocks and decides which ones each sequence uses.

The cache is `num_blocks` fixed-size blocks. A sequence's block table lists its blocks in order;
slot `i` of a sequence lives at `block_table[i // block_size] * block_size + i % block_size`.

Prefix caching: every full block is keyed by a hash chain over token ids
(protocol/kv_events.py `block_key(parent_key, tokens)`) from the sequence's `cache_root` (one per
LoRA adapter), so a block's key covers the whole prefix before it and the adapter it ran with. A hit is
confirmed by comparing token ids, never by the hash alone. Blocks are reference counted; a block
whose count drops to zero goes to the tail of the free list but keeps its key, so it can still be
hit until it is reused (least recently freed blocks are reused first).

When the engine loop asks (`record_events`), the keys stored and removed are logged in order, for
the gateways' KV-aware routing (`drain_events`).

This module holds no tensors: the runner reads block tables, this module never touches the data.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from llmcell.engine.sequence import Sequence
from llmcell.protocol.kv_events import block_key


@dataclass
class PrefixCacheStats:
    queries: int = 0
    """Prompt tokens looked up in the prefix cache."""
    hits: int = 0
    """Prompt tokens found there."""


class _Block:
    __slots__ = ("block_id", "ref_count", "key", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.key: int | None = None
        self.token_ids: tuple[int, ...] | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks={num_blocks} must be positive")
        if block_size <= 0:
            raise ValueError(f"block_size={block_size} must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        # Free blocks in reuse order (least recently freed first); O(1) removal on a cache hit.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}  # key -> block id
        self.stats = PrefixCacheStats()
        self._events: list[tuple[bool, int]] | None = None

    # ---- queries -------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by sequences (free-but-cached blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._blocks[block_id].ref_count

    def is_cached(self, block_id: int) -> bool:
        return self._blocks[block_id].key is not None

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(seq.block_table))

    # ---- admission: prefix lookup ----------------------------------------------------------
    def attach_cached_prefix(self, seq: Sequence) -> int:
        """Attach the cached blocks of the sequence's leading full blocks; return tokens hit.

        At least one token is always left to compute, so the engine has logits to sample from and
        never writes into a shared block.
        """
        if seq.block_table:
            raise ValueError(f"sequence {seq.seq_id} already holds blocks")
        num_tokens = seq.num_tokens
        if not self.enable_prefix_caching:
            return 0
        max_blocks = (num_tokens - 1) // self.block_size
        self.stats.queries += num_tokens
        parent = seq.cache_root
        hit_blocks: list[int] = []
        keys: list[int] = []
        for b in range(max_blocks):
            tokens = tuple(seq.tokens_slice(b * self.block_size, (b + 1) * self.block_size))
            key = block_key(parent, tokens)
            block_id = self._cached.get(key)
            if block_id is None or self._blocks[block_id].token_ids != tokens:
                break
            hit_blocks.append(block_id)
            keys.append(key)
            parent = key
        for block_id in hit_blocks:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
        seq.block_table = hit_blocks
        seq.block_hashes = keys
        seq.num_hashed_blocks = len(hit_blocks)
        seq.num_computed_tokens = len(hit_blocks) * self.block_size
        hit_tokens = seq.num_computed_tokens
        self.stats.hits += hit_tokens
        return hit_tokens

    # ---- growth ------------------------------------------------------------------------------
    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Give the sequence room for `num_new_tokens` more tokens; all or nothing."""
        needed = self.blocks_needed(seq, num_new_tokens)
        if needed > len(self._free):
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())
        return True

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self._blocks[block_id]
        if block.key is not None:  # evict its prefix-cache entry now that it is reused
            if self._cached.get(block.key) == block_id:
                del self._cached[block.key]
                if self._events is not None:
                    self._events.append((False, block.key))
            block.key = None
            block.token_ids = None
        block.ref_count = 1
        return block_id

    def commit_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly computed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed_tokens // self.block_size
        parent = seq.block_hashes[-1] if seq.block_hashes else seq.cache_root
        for b in range(seq.num_hashed_blocks, full):
            tokens = tuple(seq.tokens_slice(b * self.block_size, (b + 1) * self.block_size))
            key = block_key(parent, tokens)
            block = self._blocks[seq.block_table[b]]
            if key not in self._cached:
                self._cached[key] = block.block_id
                block.key = key
                block.token_ids = tokens
                if self._events is not None:
                    self._events.append((True, key))
            seq.block_hashes.append(key)
            parent = key
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    # ---- release -----------------------------------------------------------------------------
    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks (tail first, so a prefix's head outlives its tail)."""
        for block_id in reversed(seq.block_table):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count < 0:
                raise RuntimeError(f"block {block_id} released more often than taken")
            if block.ref_count == 0:
                if block.key is None:
                    self._free[block_id] = None
                    self._free.move_to_end(block_id, last=False)  # uncached: reuse first
                else:
                    self._free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_hashed_blocks = 0
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        for key, block_id in list(self._cached.items()):
            block = self._blocks[block_id]
            if block.ref_count == 0:
                block.key = None
                block.token_ids = None
                del self._cached[key]
                if self._events is not None:
                    self._events.append((False, key))

    # ---- events ------------------------------------------------------------------------------
    def record_events(self) -> None:
        """Log from now on every key the prefix cache stores or removes; the log starts with
        the keys held now, so a reader that drains it from here knows all of them."""
        self._events = [(True, key) for key in self._cached]

    def drain_events(self) -> list[tuple[bool, int]]:
        """The logged (stored?, key) changes since the last drain, oldest first."""
        if not self._events:
            return []
        events, self._events = self._events, []
        return events
