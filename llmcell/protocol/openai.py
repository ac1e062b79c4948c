"""OpenAI-compatible requests: parse and validate a JSON body into typed fields.

Every rule raises a 400 `APIError` whose message names the field and the allowed range; fields
we do not support are refused, never silently ignored. Unknown extra fields are ignored as
OpenAI-compatible servers do. vLLM's extra sampling fields (top_k, min_p, repetition_penalty,
ignore_eos, stop_token_ids) are accepted.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any

from llmcell.protocol.errors import APIError, invalid

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 16
MAX_N = 16


@dataclass
class Sampling:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    n: int = 1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    logprobs: int | None = None
    """None, or how many top alternatives to return next to each sampled token's logprob."""


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    add_generation_prompt: bool = True


@dataclass
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    user: str | None = None


# ---- field readers -------------------------------------------------------------------------------
def _num(body: dict, name: str, default, lo=None, hi=None, lo_open=False, integer=False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise invalid(f"'{name}' must be {kind}, got {value!r}", name)
    if not math.isfinite(value):
        raise invalid(f"'{name}' must be a finite number, got {value!r}", name)
    if lo is not None and (value <= lo if lo_open else value < lo):
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise invalid(f"'{name}' must be {bound}" + (f" and <= {hi}" if hi is not None else "")
                      + f", got {value}", name)
    if hi is not None and value > hi:
        raise invalid(f"'{name}' must be <= {hi}, got {value}", name)
    return value


def _bool(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean, got {value!r}", name)
    return value


def _str(body: dict, name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"'{name}' is required", name)
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string, got {type(value).__name__}", name)
    return value


def _refuse(body: dict, names: tuple[str, ...]) -> None:
    for name in names:
        value = body.get(name)
        if value not in (None, [], {}, False):
            raise invalid(f"'{name}' is not supported by this server", name)


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise invalid("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    if len(value) > MAX_STOP:
        raise invalid(f"'stop' holds {len(value)} strings; at most {MAX_STOP} are allowed", "stop")
    return value


def _token_ids(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise invalid(f"'{name}' must be a list of non-negative integer token ids", name)
    return value


COMPLETIONS_MAX_TOKENS = 16
"""OpenAI's default `max_tokens` for /v1/completions. Chat has none: it runs to the end of the
context (as OpenAI's and vLLM's chat do)."""


def parse_sampling(body: dict, *, chat: bool) -> Sampling:
    max_tokens = _num(body, "max_completion_tokens", None, lo=1, integer=True) if chat else None
    if max_tokens is None:
        max_tokens = _num(body, "max_tokens", None if chat else COMPLETIONS_MAX_TOKENS, lo=1,
                          integer=True)
    s = Sampling(
        max_tokens=max_tokens,
        temperature=float(_num(body, "temperature", 1.0, lo=0, hi=2)),
        top_p=float(_num(body, "top_p", 1.0, lo=0, hi=1, lo_open=True)),
        top_k=_num(body, "top_k", 0, lo=-1, integer=True),
        min_p=float(_num(body, "min_p", 0.0, lo=0, hi=1)),
        n=_num(body, "n", 1, lo=1, hi=MAX_N, integer=True),
        seed=_num(body, "seed", None, lo=-(2**63), hi=2**63 - 1, integer=True),
        stop=_stop(body),
        stop_token_ids=_token_ids(body.get("stop_token_ids") or [], "stop_token_ids"),
        presence_penalty=float(_num(body, "presence_penalty", 0.0, lo=-2, hi=2)),
        frequency_penalty=float(_num(body, "frequency_penalty", 0.0, lo=-2, hi=2)),
        repetition_penalty=float(_num(body, "repetition_penalty", 1.0, lo=0, hi=2,
                                      lo_open=True)),
        ignore_eos=_bool(body, "ignore_eos"),
    )
    if chat:
        if _bool(body, "logprobs"):
            s.logprobs = _num(body, "top_logprobs", 0, lo=0, hi=20, integer=True)
        elif body.get("top_logprobs") is not None:
            raise invalid("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    else:
        s.logprobs = _num(body, "logprobs", None, lo=0, hi=5, integer=True)
    return s


def _stream_options(body: dict, stream: bool) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise invalid("'stream_options' must be an object", "stream_options")
    if not stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return _bool(opts, "include_usage")


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    param = f"messages[{i}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(f"{param}: only text parts are supported, got {kind!r}", param)
            if not isinstance(part.get("text"), str):
                raise invalid(f"{param}: a text part needs a string 'text'", param)
            texts.append(part["text"])
        return "".join(texts)
    if content is None and message.get("role") == "assistant":
        if message.get("tool_calls"):
            raise invalid(f"messages[{i}]: tool calls are not supported", f"messages[{i}]")
        return ""
    raise invalid(f"{param} must be a string or a list of text parts", param)


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _str(body, "model", required=True)
    _refuse(body, ("tools", "tool_choice", "functions", "function_call", "logit_bias",
                   "response_format", "audio", "prediction"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list", "messages")
    parsed = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise invalid(f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise invalid(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}",
                          f"messages[{i}].role")
        parsed.append({"role": "system" if role == "developer" else role,
                       "content": _content(m, i)})
    stream = _bool(body, "stream")
    return ChatRequest(model=model, messages=parsed, sampling=parse_sampling(body, chat=True),
                       stream=stream, include_usage=_stream_options(body, stream),
                       user=_str(body, "user"),
                       add_generation_prompt=_bool(body, "add_generation_prompt", True))


def parse_completion(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _str(body, "model", required=True)
    _refuse(body, ("suffix", "logit_bias"))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [_token_ids(prompt, "prompt")]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        prompts = [_token_ids(p, "prompt") for p in prompt]
    else:
        raise invalid("'prompt' must be a string, a list of strings, a list of token ids, or a "
                      "list of token-id lists", "prompt")
    if any(len(p) == 0 for p in prompts):
        raise invalid("'prompt' must not be empty", "prompt")
    if len(prompts) > 64:
        raise invalid(f"'prompt' holds {len(prompts)} prompts; at most 64 are allowed", "prompt")
    sampling = parse_sampling(body, chat=False)
    best_of = _num(body, "best_of", None, lo=1, integer=True)
    if best_of is not None and best_of != sampling.n:
        raise invalid(f"'best_of'={best_of} is not supported (only best_of equal to n)", "best_of")
    echo = _bool(body, "echo")
    if echo and sampling.logprobs is not None:
        raise invalid("'echo' together with 'logprobs' is not supported (no prompt logprobs)",
                      "echo")
    stream = _bool(body, "stream")
    return CompletionRequest(model=model, prompts=prompts, sampling=sampling, stream=stream,
                             include_usage=_stream_options(body, stream), echo=echo,
                             user=_str(body, "user"))


def token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_card(model_id: str, created: int, max_model_len: int, owned_by: str = "llmcell") -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by,
            "max_model_len": max_model_len}


def not_found_model(model: str, available: list[str]) -> APIError:
    return APIError(404, f"the model '{model}' does not exist; available: {', '.join(available)}",
                    param="model", code="model_not_found")
