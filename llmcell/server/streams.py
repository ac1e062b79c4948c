"""Engine outputs as OpenAI server-sent events: a chat stream's chunks and a completions
stream's, written one step at a time (the role chunks leave with the first tokens, the last
tokens with the ending), so the first byte marks the real time to first token and a gateway can
still fail over until it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from llmcell.edge.sse import DONE, event
from llmcell.engine.outputs import RequestOutput
from llmcell.protocol.openai import usage
from llmcell.server import responses as R
from llmcell.server.tool_calls import ToolCallParser, delta


@dataclass(frozen=True)
class Stream:
    """What every chunk of one response carries."""

    rid: str
    created: int
    model: str
    n: int
    """Choices per prompt."""
    with_usage: bool
    """`stream_options.include_usage`: a last chunk with the usage."""
    token_ids: bool = False
    """`return_token_ids`: each choice carries the token ids it adds (a gateway that sees them
    can continue the answer on another replica)."""


async def chat_events(outputs: AsyncIterator[RequestOutput], s: Stream,
                      tools: list[str] | None = None,
                      failed: Callable[[int], None] | None = None) -> AsyncIterator[bytes]:
    """`tools`: the names of the functions offered: calls in the text leave as `tool_calls`
    deltas; `failed(n)` learns of blocks that were not calls."""
    roles = [event(R.chat_chunk(s.rid, s.created, s.model, {
        "index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
        "finish_reason": None}, s.with_usage)) for i in range(s.n)]
    parsers = [ToolCallParser(tools) for _ in range(s.n)] if tools is not None else None
    final, ended = None, False
    async for out in outputs:
        chunks = list(roles) if final is None else []
        final = out
        for o in out.outputs:
            text, calls = o.delta_text, []
            if parsers is not None:
                before = len(parsers[o.index].calls)
                text, calls = parsers[o.index].feed(text, final=o.finish_reason is not None)
                calls = [delta(before + k, c) for k, c in enumerate(calls)]
            if not text and not calls and (o.logprobs is None or not o.delta_logprobs) and not (
                    s.token_ids and o.delta_token_ids):
                continue
            choice = {"index": o.index,
                      "delta": {"content": text} if text else {},
                      "logprobs": R.chat_logprobs(o.delta_logprobs)
                      if o.logprobs is not None else None, "finish_reason": None}
            if calls:
                choice["delta"]["tool_calls"] = calls
            if s.token_ids:
                choice["token_ids"] = list(o.delta_token_ids)
            chunks.append(event(R.chat_chunk(s.rid, s.created, s.model, choice, s.with_usage)))
        if out.finished:
            chunks += _chat_ending(out, s, parsers)
            ended = True
        if chunks:
            yield b"".join(chunks)
    if not ended and final is not None:
        yield b"".join(_chat_ending(final, s, parsers))
    if parsers is not None and failed is not None:
        failed(sum(p.failures for p in parsers))


def _chat_ending(final: RequestOutput, s: Stream,
                 parsers: list[ToolCallParser] | None = None) -> list[bytes]:
    """The closing chunk of each choice (its finish_reason), the usage chunk if asked, DONE."""
    def reason(o) -> str:
        called = parsers is not None and parsers[o.index].calls
        return R.finish_reason(o, bool(called)) or "stop"

    chunks = [event(R.chat_chunk(s.rid, s.created, s.model, {
        "index": o.index, "delta": {}, "logprobs": None,
        "finish_reason": reason(o)}, s.with_usage)) for o in final.outputs]
    if s.with_usage:
        chunks.append(event({"id": s.rid, "object": "chat.completion.chunk",
                             "created": s.created, "model": s.model, "choices": [],
                             "usage": usage(len(final.prompt_token_ids),
                                            final.num_generated_tokens),
                             "timings": R.timings(final.metrics)}))
    chunks.append(DONE)
    return chunks


async def completion_events(outputs: list[AsyncIterator[RequestOutput]], s: Stream,
                            echoes: list[str] | None, prompt_tokens: int) -> AsyncIterator[bytes]:
    """One stream over several prompts' outputs (choice `i * n + j` is prompt i's j-th), in the
    order they come; `echoes`: each prompt's text, sent first (`echo`)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for out in outputs[i]:
                await queue.put((i, out))
        except BaseException as e:  # delivered to the consumer, which re-raises it
            await queue.put((i, e))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i)) for i in range(len(outputs))]
    try:
        for i, text in enumerate(echoes or []):
            for j in range(s.n):
                yield event(R.completion_chunk(s.rid, s.created, s.model, {
                    "index": i * s.n + j, "text": text, "logprobs": None,
                    "finish_reason": None}, s.with_usage))
        open_streams, generated = len(tasks), 0
        while open_streams:
            i, item = await queue.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            for o in item.outputs:
                if not (o.delta_token_ids or o.finished):
                    continue
                generated += len(o.delta_token_ids)
                choice = {"index": i * s.n + o.index, "text": o.delta_text,
                          "logprobs": R.completion_logprobs(o.delta_logprobs, 0)
                          if o.logprobs is not None else None,
                          "finish_reason": R.finish_reason(o)}
                if s.token_ids:
                    choice["token_ids"] = list(o.delta_token_ids)
                yield event(R.completion_chunk(s.rid, s.created, s.model, choice,
                                               s.with_usage))
        ending = [DONE]
        if s.with_usage:
            ending.insert(0, event({"id": s.rid, "object": "text_completion",
                                    "created": s.created, "model": s.model, "choices": [],
                                    "usage": usage(prompt_tokens, generated)}))
        yield b"".join(ending)
    finally:
        for t in tasks:
            t.cancel()
