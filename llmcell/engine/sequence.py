"""One sequence in the engine: its tokens, where its KV cache lives, and its life-cycle timestamps.

A request with n > 1 becomes n sibling sequences that share the prompt. Sequences are plain data:
the scheduler and block manager mutate them; no tensors live here.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from llmcell.protocol.kv_events import ROOT_KEY
from llmcell.protocol.sampling import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class SequenceTimes:
    """Monotonic timestamps (time.monotonic()) stamped by the engine for the metrics layer."""

    arrival: float = 0.0
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: float | None = None


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: str
    index: int
    """Position among the request's n siblings."""
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: frozenset[int] = frozenset()
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    """Tokens whose keys and values are in the cache."""
    block_table: list[int] = field(default_factory=list)
    num_hashed_blocks: int = 0
    """Leading full blocks already registered in the prefix cache."""
    block_hashes: list[int] = field(default_factory=list)
    num_cached_prompt_tokens: int = 0
    """Tokens that the prefix cache supplied at the last admission."""
    num_preemptions: int = 0
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    times: SequenceTimes = field(default_factory=SequenceTimes)
    grammar: object | None = None
    """The compiled grammar its output follows (guided decoding), set before it is scheduled."""
    adapter: int | None = None
    """The slot of the LoRA adapter it runs with (engine/lora/), set before it is scheduled."""
    cache_root: int = ROOT_KEY
    """Parent key of its first prefix-cache block: each adapter's prefixes are its own."""

    def __post_init__(self) -> None:
        if not self.times.arrival:
            self.times.arrival = time.monotonic()

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_at(self, i: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[i] if i < n else self.output_token_ids[i - n]

    def tokens_slice(self, start: int, end: int) -> list[int]:
        n = len(self.prompt_token_ids)
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
