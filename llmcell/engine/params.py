"""Sampling parameters of one request: validated once when the request enters the engine.

Validation errors raise ValueError whose message names the field and the allowed range, so the
HTTP layer can turn them into OpenAI-shaped 400s unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 or -1 disables top-k."""
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    logprobs: int | None = None
    """None: no logprobs; k >= 0: the sampled token's logprob plus the top k alternatives."""
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        _check_int("max_tokens", self.max_tokens, lo=1)
        _check_int("n", self.n, lo=1, hi=128)
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature={self.temperature} must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        _check_int("top_k", self.top_k, lo=-1)
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p={self.min_p} must be between 0 and 1")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be in (0, 2]")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise ValueError(f"{name}={value} must be between -2 and 2")
        if self.seed is not None:
            _check_int("seed", self.seed, lo=-(2**63), hi=2**63 - 1)
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, lo=0, hi=20)
        if self.prompt_logprobs is not None:
            raise ValueError("prompt_logprobs is not supported")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError("stop must hold non-empty strings")
        if len(self.stop) > 16:
            raise ValueError(f"stop holds {len(self.stop)} strings; at most 16 are allowed")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    @property
    def has_filters(self) -> bool:
        return self.top_p < 1.0 or self.top_k > 0 or self.min_p > 0.0

    def for_sibling(self, index: int) -> "SamplingParams":
        """Parameters of the index-th of n parallel samples (distinct seeds, n=1)."""
        seed = None if self.seed is None else self.seed + index
        return replace(self, n=1, seed=seed)


def _check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name}={value} must be >= {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}={value} must be <= {hi}")


def check_request(prompt_token_ids: list[int], params: SamplingParams, vocab_size: int,
                  max_model_len: int) -> None:
    """Raise ValueError if the request can never run on an engine with this vocabulary and
    context window (checked before it is queued, wherever the engine runs)."""
    if not prompt_token_ids:
        raise ValueError("the prompt is empty")
    if any(not 0 <= t < vocab_size for t in prompt_token_ids):
        raise ValueError(f"prompt token ids must be in [0, {vocab_size})")
    total = len(prompt_token_ids) + params.max_tokens
    if total > max_model_len:
        raise ValueError(
            f"this model's maximum context length is {max_model_len} tokens; the request "
            f"has {len(prompt_token_ids)} prompt tokens + {params.max_tokens} max_tokens = {total}")
