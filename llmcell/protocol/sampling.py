"""Sampling parameters of one request, and the one place where their values are checked.

Every API that accepts sampling fields (OpenAI chat and completions, Saxml's `extra_inputs`) reads
its JSON into `SamplingParams` and turns a `SamplingError` into its own error shape, naming its own
field; the engine takes the same object (across the process pipe too). `check_request` is the one
check of a prompt against a model's vocabulary and context window, run before a request is queued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from llmcell.protocol.guided import Guided

MAX_N = 16
MAX_STOP = 16
MAX_LOGPROBS = 20


class SamplingError(ValueError):
    """A sampling field out of its type or range: `param` names the field, `rule` what it must
    be (an API that calls the field otherwise words its message with `rule`)."""

    def __init__(self, param: str, rule: str) -> None:
        super().__init__(f"'{param}' {rule}")
        self.param = param
        self.rule = rule


class ContextLengthError(ValueError):
    """The prompt and `max_tokens` do not fit in the model's context window."""


@dataclass(frozen=True)
class Range:
    """A numeric field's type and bounds."""

    integer: bool
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def check(self, name: str, value: object) -> int | float:
        kind = "an integer" if self.integer else "a number"
        if self.integer and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 1.0 is the integer 1 (as JSON Schema)
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            raise SamplingError(name, f"must be {kind}, got {value!r}")
        if not math.isfinite(value):
            raise SamplingError(name, f"must be a finite number, got {value!r}")
        below = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        if below or (self.hi is not None and value > self.hi):
            raise SamplingError(name, f"must be {kind} {self.bounds()}, got {value}")
        return value if self.integer else float(value)

    def bounds(self) -> str:
        if self.hi is None:
            return f"> {self.lo}" if self.lo_open else f">= {self.lo}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}]"


RANGES = {
    "max_tokens": Range(True, 1),
    "temperature": Range(False, 0, 2),
    "top_p": Range(False, 0, 1, lo_open=True),
    "top_k": Range(True, -1),
    "min_p": Range(False, 0, 1),
    "seed": Range(True, -(2**63), 2**63 - 1),
    "repetition_penalty": Range(False, 0, 2, lo_open=True),
    "presence_penalty": Range(False, -2, 2),
    "frequency_penalty": Range(False, -2, 2),
    "n": Range(True, 1, MAX_N),
    "logprobs": Range(True, 0, MAX_LOGPROBS),
    "priority": Range(True, 0, 9),
}
"""Each numeric field's type and range; None (where a field allows it) skips the check."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = 16
    """None: up to the end of the context window (`check_request` resolves it)."""
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
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    priority: int = 0
    """Lower runs first (as vLLM's): the gateway sets 0 for the interactive band, 1 for batch."""
    guided: Guided | None = None
    """What the output must match (a JSON schema, regex, choice or grammar), or None."""

    def __post_init__(self) -> None:
        for name, rule in RANGES.items():
            value = getattr(self, name)
            if value is not None or name not in ("max_tokens", "seed", "logprobs"):
                object.__setattr__(self, name, rule.check(name, value))
        object.__setattr__(self, "stop", _stop(self.stop))
        ids = self.stop_token_ids
        token = Range(True, 0)
        try:
            if not isinstance(ids, (list, tuple)):
                raise SamplingError("stop_token_ids", "")
            ids = tuple(token.check("stop_token_ids", t) for t in ids)
        except SamplingError:
            raise SamplingError("stop_token_ids", "must be a list of non-negative integer token "
                                                  "ids") from None
        object.__setattr__(self, "stop_token_ids", ids)
        if self.guided is not None and not isinstance(self.guided, Guided):
            raise SamplingError("guided", f"must be a Guided, got {self.guided!r}")
        for name in ("ignore_eos", "skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise SamplingError(name, f"must be a boolean, got {getattr(self, name)!r}")

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


def _stop(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        raise SamplingError("stop", "must be a non-empty string or a list of non-empty strings")
    if len(value) > MAX_STOP:
        raise SamplingError("stop", f"holds {len(value)} strings; at most {MAX_STOP} are allowed")
    return tuple(value)


def check_request(prompt_token_ids: list[int], params: SamplingParams, vocab_size: int,
                  max_model_len: int) -> SamplingParams:
    """`params` with `max_tokens` resolved (None: the rest of the context window), if the request
    can run on an engine with this vocabulary and context window; else ValueError (a
    `ContextLengthError` when it does not fit)."""
    if not prompt_token_ids:
        raise ValueError("the prompt is empty")
    if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}), the vocabulary")
    prompt = len(prompt_token_ids)
    max_tokens = params.max_tokens if params.max_tokens is not None else max_model_len - prompt
    if max_tokens < 1 or prompt + max_tokens > max_model_len:
        raise ContextLengthError(
            f"this model's maximum context length is {max_model_len} tokens; the request has "
            f"{prompt} prompt tokens + {max_tokens} max_tokens = {prompt + max_tokens} tokens")
    return params if params.max_tokens == max_tokens else replace(params, max_tokens=max_tokens)
