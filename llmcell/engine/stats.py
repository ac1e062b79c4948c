"""Engine statistics as plain data, read by the metrics layer (which only exports them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    """Fraction of KV blocks held by sequences, 0..1."""
    num_blocks: int
    num_free_blocks: int
    prefix_cache_queries: int
    """Prompt tokens looked up in the prefix cache (cumulative)."""
    prefix_cache_hits: int
    num_preemptions: int
    prompt_tokens: int
    """Prompt tokens computed (cumulative; cached tokens excluded)."""
    generation_tokens: int
    steps: int
    prefill_seconds: float = 0.0
    """How long the most recent step that computed prompt tokens took (0 before the first): the
    scale of what a request that misses a prefill step waits for it."""
    adapters: tuple[tuple[str, int, int, float, bool], ...] = ()
    """Per LoRA adapter used: (name, loads, evictions, load seconds, resident now)."""
