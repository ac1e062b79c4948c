"""The gateway's mid-stream failover relay in process: a first replica's stream that breaks after
some tokens, a second that continues; what the client sees (one id, one role chunk, no token ids,
the text once) and what the second replica is asked (the tokens so far and the characters the
client has). The whole path on real processes: tests/cell/test_stream_failover.py."""

from __future__ import annotations

import asyncio
import json

from llmcell.gateway.forward import Forwarded
from llmcell.gateway.resume import Resumable
from llmcell.protocol.errors import APIError


def sse(*events) -> list[bytes]:
    return [b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
            for e in events]


def chunk(rid: str, delta: dict, ids: list[int] | None = None, finish=None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    if ids is not None:
        choice["token_ids"] = ids
    return {"id": rid, "created": 1 if rid == "first" else 2, "choices": [choice]}


async def stream_of(items: list[bytes]):
    for item in items:
        yield item


class Replicas:
    """A stand-in forwarder: each `send` answers with the next scripted stream (or raises)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[dict, frozenset]] = []

    async def send(self, model, path, body, stream, key, exclude):
        self.sent.append((body, exclude))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Forwarded(200, stream=stream_of(answer), replica=f"r{len(self.sent) + 1}")


def run(first: list[bytes], forwarder: Replicas, retries: int = 2):
    broken, moved = [], []
    r = Resumable(forwarder, "m", "/v1/chat/completions", {"model": "m", "stream": True},
                  Forwarded(200, stream=stream_of(first), replica="r1"), None, retries, False,
                  lambda: broken.append(1), lambda: moved.append(1))

    async def read():
        return b"".join([c async for c in r])
    return asyncio.run(read()), broken, moved


def events(data: bytes) -> list:
    return [json.loads(e[6:]) if e != b"data: [DONE]" else "DONE"
            for e in data.split(b"\n\n") if e]


BROKEN = {"error": {"message": "replica r1 failed mid-stream", "code": "replica_failed"}}


def test_a_broken_stream_goes_on_on_another_replica_and_the_client_sees_one_stream():
    first = sse(chunk("first", {"role": "assistant", "content": ""}),
                chunk("first", {"content": "Hello"}, [10, 11]),
                chunk("first", {}, [12]),  # a token whose text is held back
                BROKEN)
    second = sse(chunk("second", {"role": "assistant", "content": ""}),
                 chunk("second", {"content": " world"}, [13]),
                 chunk("second", {}, [], "length"),
                 {"id": "second", "choices": [], "usage": {"completion_tokens": 4}}, b"[DONE]")
    forwarder = Replicas(second)
    data, broken, moved = run(first, forwarder)
    got = events(data)
    assert got[-1] == "DONE" and not broken and moved == [1]
    chunks = [e for e in got if e != "DONE"]
    assert {e["id"] for e in chunks} == {"first"} and {e["created"] for e in chunks} == {1}
    deltas = [c["delta"] for e in chunks for c in e["choices"]]
    assert sum("role" in d for d in deltas) == 1
    assert "".join(d.get("content", "") for d in deltas) == "Hello world"
    assert not any("token_ids" in c for e in chunks for c in e["choices"])
    assert chunks[-1]["usage"] == {"completion_tokens": 4}
    body, exclude = forwarder.sent[0]
    assert body["llmcell_continuation"] == {"token_ids": [10, 11, 12], "emitted_chars": 5}
    assert exclude == frozenset({"r1"})


def test_a_stream_that_cannot_move_ends_with_the_error_event():
    first = sse(chunk("first", {"content": "Hi"}, [1]), BROKEN)
    data, broken, moved = run(first, Replicas(APIError(503, "no replica")))
    assert events(data)[-1] == BROKEN and broken == [1] and not moved
    # and after `retries` moves, the next break is the client's
    data, broken, moved = run(first, Replicas(sse(chunk("s", {"content": "!"}, [2]), BROKEN)),
                              retries=1)
    assert events(data)[-1] == BROKEN and broken == [1] and moved == [1]
    assert "".join(c["delta"].get("content", "") for e in events(data)[:-1]
                   for c in e["choices"]) == "Hi!"


def test_a_stream_closed_early_without_an_error_moves_too():
    first = sse(chunk("first", {"content": "Hi"}, [1]))  # no [DONE]: the connection ended
    second = sse(chunk("second", {"content": " there"}, [2], "stop"), b"[DONE]")
    data, broken, moved = run(first, Replicas(second))
    assert events(data)[-1] == "DONE" and moved == [1] and not broken
