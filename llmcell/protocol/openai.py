"""OpenAI-compatible requests: parse and validate a JSON body into typed fields.

Every rule raises a 400 `APIError` whose message names the field and the allowed range; fields
we do not support are refused, never silently ignored. Unknown extra fields are ignored as
OpenAI-compatible servers do. vLLM's extra sampling fields (top_k, min_p, repetition_penalty,
ignore_eos, stop_token_ids) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmcell.protocol.errors import APIError, invalid
from llmcell.protocol.guided import parse_guided
from llmcell.protocol.sampling import Range, SamplingError, SamplingParams
from llmcell.protocol.tools import ToolSet, parse_tools, tool_call_message

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_PROMPTS = 64
"""Prompts one /v1/completions request may hold."""
CHAT_UNSUPPORTED = ("functions", "function_call", "logit_bias", "audio", "prediction")
COMPLETION_UNSUPPORTED = ("suffix", "logit_bias")
"""Fields refused when given a value (empty or null is allowed): never silently ignored."""
CONTINUATION = "llmcell_continuation"
"""Internal (gateway to model server): go on with an answer another replica began,
`{"token_ids": [...], "emitted_chars": n}`. The gateway removes it from clients' bodies."""


@dataclass(frozen=True)
class Continuation:
    token_ids: tuple[int, ...]
    emitted_chars: int


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    """{role, content} each; an assistant's may hold `tool_calls`, a tool's `tool_call_id`."""
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    add_generation_prompt: bool = True
    return_token_ids: bool = False
    """vLLM's field: each choice (each stream chunk's) carries its token ids."""
    continuation: Continuation | None = None
    tools: ToolSet | None = None
    """The tools the model may call (None: none, or `tool_choice` none)."""

    def tool_dicts(self) -> list[dict] | None:
        """The tools offered, as the chat template receives them."""
        return None if self.tools is None else [t.openai() for t in self.tools.tools]


@dataclass
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    user: str | None = None
    return_token_ids: bool = False
    continuation: Continuation | None = None


# ---- field readers -------------------------------------------------------------------------------
def _int(body: dict, name: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return Range(True, lo, hi).check(name, value)
    except SamplingError as e:
        raise invalid(str(e), name) from None


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


_TOKEN_ID = Range(True, 0)


def _token_ids(value: Any, name: str) -> list[int]:
    try:
        if not isinstance(value, list):
            raise SamplingError(name, "")
        return [_TOKEN_ID.check(name, t) for t in value]
    except SamplingError:
        raise invalid(f"'{name}' must be a list of non-negative integer token ids", name) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


COMPLETIONS_MAX_TOKENS = 16
"""OpenAI's default `max_tokens` for /v1/completions. Chat has none: it runs to the end of the
context (as OpenAI's and vLLM's chat do)."""
COMPLETIONS_MAX_LOGPROBS = 5
"""OpenAI's limit on /v1/completions' `logprobs` (chat's `top_logprobs` goes to 20)."""
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "n", "seed", "stop",
                   "stop_token_ids", "presence_penalty", "frequency_penalty",
                   "repetition_penalty", "ignore_eos", "priority")
"""Request fields that `SamplingParams` takes under the same name (vLLM's extras included)."""


def parse_sampling(body: dict, *, chat: bool) -> SamplingParams:
    """The request's sampling fields (absent or null: the default), checked by `SamplingParams`;
    an error names the field as this API calls it."""
    names = {"max_tokens": "max_tokens"}
    max_tokens = body.get("max_completion_tokens") if chat else None
    if max_tokens is not None:
        names["max_tokens"] = "max_completion_tokens"
    else:
        max_tokens = body.get("max_tokens")
    if max_tokens is None and not chat:
        max_tokens = COMPLETIONS_MAX_TOKENS
    if chat:
        names["logprobs"] = "top_logprobs"
        logprobs = None
        if _bool(body, "logprobs"):
            logprobs = 0 if body.get("top_logprobs") is None else body["top_logprobs"]
        elif body.get("top_logprobs") is not None:
            raise invalid("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    else:
        logprobs = _int(body, "logprobs", 0, COMPLETIONS_MAX_LOGPROBS)
    given = {name: body[name] for name in SAMPLING_FIELDS if body.get(name) is not None}
    guided = parse_guided(body)
    try:
        return SamplingParams(max_tokens=max_tokens, logprobs=logprobs, guided=guided, **given)
    except SamplingError as e:
        param = names.get(e.param, e.param)
        raise invalid(f"'{param}' {e.rule}", param) from None


def _continuation(body: dict, sampling: SamplingParams, prompts: int = 1
                  ) -> Continuation | None:
    c = body.get(CONTINUATION)
    if c is None:
        return None
    if not isinstance(c, dict) or not isinstance(c.get("emitted_chars"), int) \
            or isinstance(c.get("emitted_chars"), bool) or c["emitted_chars"] < 0:
        raise invalid(f"'{CONTINUATION}' must be an object with token_ids and emitted_chars "
                      ">= 0", CONTINUATION)
    if sampling.n != 1 or prompts != 1:
        raise invalid(f"'{CONTINUATION}' needs n=1 and one prompt", CONTINUATION)
    ids = _token_ids(c.get("token_ids"), f"{CONTINUATION}.token_ids")
    return Continuation(tuple(ids), c["emitted_chars"])


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
        return ""
    raise invalid(f"{param} must be a string or a list of text parts", param)


def _message(m: dict, i: int, role: str) -> dict:
    message = {"role": "system" if role == "developer" else role, "content": _content(m, i)}
    calls = m.get("tool_calls")
    if role == "assistant" and calls:
        if not isinstance(calls, list):
            raise invalid(f"'messages[{i}].tool_calls' must be a list", f"messages[{i}].tool_calls")
        message["tool_calls"] = [tool_call_message(c, f"messages[{i}].tool_calls[{k}]")
                                 for k, c in enumerate(calls)]
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"'messages[{i}].tool_call_id' is required for a tool message",
                          f"messages[{i}].tool_call_id")
        message["tool_call_id"] = call_id
    return message


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _str(body, "model", required=True)
    _refuse(body, CHAT_UNSUPPORTED)
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
        parsed.append(_message(m, i, role))
    stream = _bool(body, "stream")
    sampling = parse_sampling(body, chat=True)
    tools = parse_tools(body)
    if tools is not None and (guide := tools.guide()) is not None:
        if sampling.guided is not None:
            raise invalid(f"'tool_choice' {tools.choice!r} forces tool calls; it cannot be "
                          f"combined with '{sampling.guided.param}'", "tool_choice")
        sampling = replace(sampling, guided=guide)
    return ChatRequest(model=model, messages=parsed, sampling=sampling,
                       stream=stream, include_usage=_stream_options(body, stream),
                       user=_str(body, "user"),
                       add_generation_prompt=_bool(body, "add_generation_prompt", True),
                       return_token_ids=_bool(body, "return_token_ids"),
                       continuation=_continuation(body, sampling), tools=tools)


def parse_completion(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _str(body, "model", required=True)
    _refuse(body, COMPLETION_UNSUPPORTED)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(_is_number(p) for p in prompt):
        prompts = [_token_ids(prompt, "prompt")]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        prompts = [_token_ids(p, "prompt") for p in prompt]
    else:
        raise invalid("'prompt' must be a string, a list of strings, a list of token ids, or a "
                      "list of token-id lists", "prompt")
    if any(len(p) == 0 for p in prompts):
        raise invalid("'prompt' must not be empty", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise invalid(f"'prompt' holds {len(prompts)} prompts; at most {MAX_PROMPTS} are allowed",
                      "prompt")
    sampling = parse_sampling(body, chat=False)
    best_of = _int(body, "best_of", 1)
    if best_of is not None and best_of != sampling.n:
        raise invalid(f"'best_of'={best_of} is not supported (only best_of equal to n)", "best_of")
    echo = _bool(body, "echo")
    if echo and sampling.logprobs is not None:
        raise invalid("'echo' together with 'logprobs' is not supported (no prompt logprobs)",
                      "echo")
    stream = _bool(body, "stream")
    return CompletionRequest(model=model, prompts=prompts, sampling=sampling, stream=stream,
                             include_usage=_stream_options(body, stream), echo=echo,
                             user=_str(body, "user"),
                             return_token_ids=_bool(body, "return_token_ids"),
                             continuation=_continuation(body, sampling, len(prompts)))


def token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_card(model_id: str, created: int, max_model_len: int, owned_by: str = "llmcell",
               root: str | None = None, parent: str | None = None) -> dict:
    """An OpenAI model card with vLLM's extras: `max_model_len`, `root`, the model it serves
    (`llmcell tokenizer export ROOT DIR` gives client tools its tokenizer), and `parent`, a LoRA
    adapter's base model (null for a model, as vLLM)."""
    card = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by,
            "max_model_len": max_model_len}
    if root:
        card["root"] = root
    card["parent"] = parent
    return card


def not_found_model(model: str, available: list[str]) -> APIError:
    return APIError(404, f"the model '{model}' does not exist; available: {', '.join(available)}",
                    param="model", code="model_not_found")
