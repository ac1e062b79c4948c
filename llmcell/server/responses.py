"""Build OpenAI response bodies and stream chunks from engine outputs (chat and completions)."""

from __future__ import annotations

from llmcell.engine.outputs import CompletionOutput, RequestMetrics, TokenLogprob
from llmcell.protocol.openai import token_bytes
from llmcell.server import tool_calls


def finish_reason(out: CompletionOutput, called: bool = False) -> str | None:
    """OpenAI's reason: `length`, or `tool_calls` when the answer ended with calls, else `stop`."""
    if out.finish_reason is None:
        return None
    if out.finish_reason == "length":
        return "length"
    return "tool_calls" if called else "stop"


def chat_logprobs(items: list[TokenLogprob]) -> dict:
    return {"content": [{
        "token": t.token, "logprob": t.logprob, "bytes": token_bytes(t.token),
        "top_logprobs": [{"token": s, "logprob": v, "bytes": token_bytes(s)} for _, s, v in t.top],
    } for t in items]}


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict:
    tokens, lps, tops, offsets = [], [], [], []
    for t in items:
        tokens.append(t.token)
        lps.append(t.logprob)
        tops.append({s: v for _, s, v in t.top} if t.top else None)
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def chat_choice(index: int, out: CompletionOutput, token_ids: bool = False,
                tools: list[str] | None = None) -> tuple[dict, int]:
    """(the choice, tool-call blocks that did not parse); `tools`: the functions offered, whose
    calls the text may hold."""
    message, failures = {"role": "assistant", "content": out.text}, 0
    if tools is not None:
        message, failures = tool_calls.message(out.text, tools)
    choice = {"index": index, "message": message,
              "logprobs": chat_logprobs(out.logprobs) if out.logprobs is not None else None,
              "finish_reason": finish_reason(out, "tool_calls" in message)}
    if token_ids:
        choice["token_ids"] = list(out.token_ids)
    return choice, failures


def completion_choice(index: int, out: CompletionOutput, prefix: str = "",
                      token_ids: bool = False) -> dict:
    choice = {"index": index, "text": prefix + out.text,
              "logprobs": completion_logprobs(out.logprobs, len(prefix))
              if out.logprobs is not None else None,
              "finish_reason": finish_reason(out)}
    if token_ids:
        choice["token_ids"] = list(out.token_ids)
    return choice


def chat_chunk(rid: str, created: int, model: str, choice: dict, with_usage: bool) -> dict:
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [choice]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def completion_chunk(rid: str, created: int, model: str, choice: dict, with_usage: bool) -> dict:
    chunk = {"id": rid, "object": "text_completion", "created": created, "model": model,
             "choices": [choice]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def timings(m: RequestMetrics | None) -> dict | None:
    """The engine's own account of a request (as llama.cpp's server gives `timings`): milliseconds
    from its arrival at the engine to its first schedule, first token and end."""
    if m is None:
        return None

    def since(t: float | None) -> float | None:
        return None if t is None else round((t - m.arrival) * 1e3, 3)

    return {"queued_ms": since(m.first_scheduled), "first_token_ms": since(m.first_token),
            "total_ms": since(m.finished), "cached_prompt_tokens": m.num_cached_prompt_tokens}
