"""The contract between the scheduler and the model runner: a plan in, sampled tokens out.

A plan lists chunks: single-token chunks (decodes) first, then multi-token chunks (prefills,
possibly partial). The runner reads each chunk's tokens and the sequence's block table; it never
changes a sequence. The scheduler never sees a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcell.engine.sequence import Sequence


@dataclass
class ScheduledChunk:
    seq: Sequence
    start: int
    """First position computed in this step (tokens before it are already cached)."""
    num_tokens: int
    sample: bool
    """Whether this chunk reaches the sequence's last known token, so a new token is sampled."""

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass
class SchedulerPlan:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    released_seq_ids: list[int] = field(default_factory=list)
    """Sequences that ended since the last plan: the runner drops any state it keeps for them."""

    @property
    def num_batched_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class StepResult:
    """What the runner returns for a plan: one sampled token per chunk with `sample=True`."""

    sampled: dict[int, SampledToken] = field(default_factory=dict)
