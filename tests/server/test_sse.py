"""`EventStreamResponse`: chunks go out as the body yields them; the body is closed and `close`
runs however the response ends (finished, client gone, or never started)."""

from __future__ import annotations

import asyncio

from llmcell.server.sse import DONE, EventStreamResponse, event


def run(response: EventStreamResponse, disconnect_after: float | None = None,
        fail_send: bool = False) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        if disconnect_after is None:
            await asyncio.Event().wait()  # the client stays
        await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message):
        if fail_send:
            raise OSError("connection reset")
        sent.append(message)

    async def main():
        try:
            await response({"type": "http"}, receive, send)
        except OSError:
            pass

    asyncio.run(main())
    return sent


def test_streams_chunks_then_closes():
    closed = []

    async def body():
        yield event({"a": 1})
        yield DONE

    sent = run(EventStreamResponse(body(), headers={"X-Test": "1"}, close=lambda: closed.append(1)))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-test"] == b"1" and headers[b"cache-control"] == b"no-cache"
    assert [m["body"] for m in sent[1:]] == [b'data: {"a":1}\n\n', DONE, b""]
    assert sent[-1]["more_body"] is False and closed == [1]


def test_client_leaving_stops_the_body_and_closes():
    closed, finalized = [], []

    async def endless():
        try:
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0.01)
        finally:
            finalized.append(1)

    sent = run(EventStreamResponse(endless(), close=lambda: closed.append(1)),
               disconnect_after=0.1)
    assert 3 < len(sent) < 30 and sent[-1]["more_body"] is True  # cut off, no clean end
    assert finalized == [1] and closed == [1]


def test_close_runs_when_the_body_never_started():
    closed, started = [], []

    async def body():
        started.append(1)
        yield DONE

    run(EventStreamResponse(body(), close=lambda: closed.append(1)), fail_send=True)
    assert started == [] and closed == [1]
