"""What the engine hands back: per-request outputs, cumulative and as deltas for streaming."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resume:
    """A request that another engine began: the tokens it generated and how much of their text
    the client was already sent. The engine prefills the prompt with them and goes on from
    there, so the answer continues as if nothing happened (a seed's draws are replayed)."""

    token_ids: tuple[int, ...]
    emitted_chars: int


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)
    """The top alternatives as (token_id, token text, logprob), most likely first."""


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    """"stop", "length" or "abort"; None while running."""
    stop_reason: str | int | None = None
    """The stop string or stop token that ended the output, when one did."""
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)
    delta_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Monotonic timestamps of the request's life, for the metrics layer."""

    arrival: float
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: float | None = None
    num_cached_prompt_tokens: int = 0


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    metrics: RequestMetrics | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_generated_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)
