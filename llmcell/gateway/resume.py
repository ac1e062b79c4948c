"""Mid-stream failover: a streamed answer whose replica fails after tokens were sent goes on on
another replica, in the same response, with no text lost or repeated.

The gateway asks the replica for each chunk's token ids (`return_token_ids`) and counts the text
it passed on. When the stream breaks (an error event, the connection lost), it sends the same
request to another replica with `llmcell_continuation`: the tokens so far and how many
characters of their text the client has. That replica prefills the prompt with them and goes on
(engine `Resume`), as the first would have: the same text for greedy requests and, the seed's
draws being replayed, for seeded ones (in fp32; a bf16 prefill may part at a near-tie). The
client sees one stream: the first replica's `id` and `created`, one role chunk, one
`finish_reason`, and usage that counts the whole answer. Token ids reach the client only if it
asked for them.

Streams of one choice (n=1, one prompt) move; others end with the error event as before, and so
does a stream that moved `retries` times already.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import AsyncIterator

from llmcell.gateway.forward import Forwarded, Forwarder
from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import CONTINUATION

DONE = b"data: [DONE]"


async def events(stream) -> AsyncIterator[bytes]:
    """The SSE events of a byte stream, one at a time (without their blank line); the stream is
    closed when they end, or when the caller stops reading."""
    buffer = b""
    try:
        async for chunk in stream:
            buffer += chunk
            while b"\n\n" in buffer:
                item, buffer = buffer.split(b"\n\n", 1)
                if item.strip():
                    yield item.strip()
        if buffer.strip():
            yield buffer.strip()
    finally:
        await stream.aclose()


class Resumable:
    def __init__(self, forwarder: Forwarder, model: str, path: str, body: dict,
                 first: Forwarded, prefix_key: int | None, retries: int,
                 keep_token_ids: bool, on_broken, on_moved=lambda: None) -> None:
        """`on_broken`: called when the answer cannot go on (the client gets the error);
        `on_moved`: each time it goes on on another replica."""
        self.forwarder = forwarder
        self.model, self.path, self.body, self.key = model, path, body, prefix_key
        self.first = first
        self.on_broken = on_broken
        self.on_moved = on_moved
        self.retries = retries
        self.keep_token_ids = keep_token_ids
        self.token_ids: list[int] = []
        self.chars = 0
        self.ident: tuple[str, int] | None = None
        """The first replica's `id` and `created`, kept for every chunk."""
        self.resumes = 0
        self.replicas = [first.replica]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream, resumed = self.first.stream, False
        while True:
            broken = None
            async with aclosing(events(stream)) as items:
                async for item in items:
                    if item == DONE:
                        yield item + b"\n\n"
                        return
                    data = _data(item)
                    if data is None:
                        yield item + b"\n\n"
                        continue
                    if "error" in data and not data.get("choices"):
                        broken = item
                        break
                    out = self._pass(data, resumed)
                    if out is not None:
                        yield b"data: " + json.dumps(out).encode() + b"\n\n"
            if broken is None:
                broken = _error_event("the replica closed the stream before its end")
            moved = await self._move() if self.resumes < self.retries else None
            if moved is None:
                self.on_broken()
                yield broken + b"\n\n"
                return
            stream, resumed = moved, True

    def _pass(self, data: dict, resumed: bool) -> dict | None:
        """The chunk as the client gets it (None: dropped), counting what it carries."""
        if self.ident is None:
            self.ident = (data.get("id"), data.get("created"))
        elif resumed:
            data["id"], data["created"] = self.ident
        choices = []
        for choice in data.get("choices") or []:
            delta = choice.get("delta")
            if resumed and isinstance(delta, dict) and "role" in delta:
                continue  # the continuation's own role chunk: the client has one
            self.token_ids += choice.get("token_ids") or []
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            self.chars += len(text or "")
            if not self.keep_token_ids:
                choice.pop("token_ids", None)
            choices.append(choice)
        if data.get("choices") and not choices:
            return None
        data["choices"] = choices
        return data

    async def _move(self):
        """The stream of another replica continuing the answer, or None."""
        self.resumes += 1
        body = dict(self.body, **{CONTINUATION: {"token_ids": list(self.token_ids),
                                                 "emitted_chars": self.chars}})
        try:
            result = await self.forwarder.send(self.model, self.path, body, True, self.key,
                                               frozenset(self.replicas))
        except APIError:
            return None
        if result.stream is None:
            return None
        self.replicas.append(result.replica)
        self.on_moved()
        return result.stream


def _data(item: bytes) -> dict | None:
    if not item.startswith(b"data: "):
        return None
    try:
        data = json.loads(item[6:])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_event(message: str) -> bytes:
    err = APIError(502, f"{message}; the answer is incomplete, retry the request",
                   code="replica_failed")
    return b"data: " + json.dumps(err.body()).encode()
