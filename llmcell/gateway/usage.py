"""What a request costs in tokens, at the gateway (which has no tokenizer): the reservation made
at admission, and the usage read back from the answer to settle it.

The reservation is the prompt's estimate (4 characters a token, as OpenAI estimates it, plus a
few per chat message) and `max_tokens` for every choice, or `default_reserve` where the request
sets none. A non-streaming answer carries `usage`. A stream is asked for its usage chunk
(`stream_options.include_usage`) when a token quota needs it; `UsageTap` reads that chunk and,
when the client did not ask for it, leaves it out.
"""

from __future__ import annotations

import json
import math
from typing import AsyncIterator, Callable

PER_MESSAGE = 4


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def prompt_estimate(body: dict, chat: bool) -> tuple[int, int]:
    """(tokens of one prompt, number of prompts) as the gateway estimates them."""
    if chat:
        total = 0
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            total += PER_MESSAGE + _text_tokens(content if isinstance(content, str) else "")
        return total, 1
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return _text_tokens(prompt), 1
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return len(prompt), 1
    if isinstance(prompt, list) and prompt:
        sizes = [len(p) if isinstance(p, list) else _text_tokens(str(p)) for p in prompt]
        return max(sizes), len(sizes)
    return 0, 1


def reservation(body: dict, chat: bool, max_tokens: int | None, n: int,
                default_reserve: int) -> int:
    prompt, prompts = prompt_estimate(body, chat)
    return prompts * (prompt + n * (max_tokens if max_tokens is not None else default_reserve))


def tokens_of(body) -> int | None:
    """`usage.total_tokens` of an answer, when it has one."""
    usage = body.get("usage") if isinstance(body, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and total >= 0 else None


class UsageTap:
    """Passes a stream through event by event and reads its usage chunk (the one with no
    choices), dropping it when `keep` is false. `done(tokens or None)` runs once at the end."""

    def __init__(self, stream: AsyncIterator[bytes], keep: bool,
                 done: Callable[[int | None], None]) -> None:
        self.stream = stream
        self.keep = keep
        self.done = done
        self.tokens: int | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for chunk in self.stream:
                pending += chunk
                *events, pending = pending.split(b"\n\n")
                out = [e + b"\n\n" for e in events if self._pass(e)]
                if out:
                    yield b"".join(out)
            if pending:
                yield pending
        finally:
            self.done(self.tokens)

    def _pass(self, event: bytes) -> bool:
        if b'"usage"' not in event or not event.startswith(b"data: {"):
            return True
        try:
            payload = json.loads(event[6:])
        except ValueError:
            return True
        if payload.get("choices") or not isinstance(payload.get("usage"), dict):
            return True
        self.tokens = tokens_of(payload)
        return self.keep
