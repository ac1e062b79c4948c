"""`EventStreamResponse`: chunks go out as the body yields them; the body is closed and `close`
runs however the response ends (finished, client gone, or never started)."""

from __future__ import annotations

import asyncio
import json

from llmcell.edge.sse import DONE, EventStreamResponse, event


def run(response: EventStreamResponse, disconnect_after: float | None = None,
        fail_send: bool = False) -> list[dict]:
    sent: list[dict] = []
    complete = None

    async def receive():  # as uvicorn's: "http.disconnect" once the response is complete, too
        if disconnect_after is None:
            await complete.wait()  # the client stays
        else:
            try:
                await asyncio.wait_for(complete.wait(), disconnect_after)
            except TimeoutError:
                pass  # the client leaves
        return {"type": "http.disconnect"}

    async def send(message):
        if fail_send:
            raise OSError("connection reset")
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            complete.set()

    async def main():
        nonlocal complete
        complete = asyncio.Event()
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
    assert [m["body"] for m in sent[1:]] == [b'data: {"a":1}\n\n', DONE]
    assert sent[-1]["more_body"] is False and closed == [1]


def test_a_chunk_ending_in_done_ends_the_response_in_that_write_and_the_body_still_finishes():
    after = []

    async def body():
        yield event({"a": 1}) + DONE
        await asyncio.sleep(0.01)  # e.g. metrics recorded once the answer is out
        after.append(1)

    sent = run(EventStreamResponse(body()))
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == [(b'data: {"a":1}\n\n' + DONE, False)]
    assert after == [1]


def test_a_body_without_done_still_ends_the_response():
    async def body():
        yield event({"a": 1})

    sent = run(EventStreamResponse(body()))
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == [(b'data: {"a":1}\n\n', True),
                                                               (b"", False)]


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


def test_close_runs_when_the_first_write_fails():
    closed, finalized = [], []

    async def body():
        try:
            yield event({"a": 1})
            yield DONE
        finally:
            finalized.append(1)

    assert run(EventStreamResponse(body(), close=lambda: closed.append(1)), fail_send=True) == []
    assert finalized == [1] and closed == [1]



def test_the_head_waits_for_the_first_chunk_and_an_error_before_it_gets_its_status():
    from llmcell.protocol.errors import APIError

    async def failing():
        await asyncio.sleep(0.01)
        raise APIError(503, "the engine has failed")
        yield b""  # an async generator

    closed = []
    sent = run(EventStreamResponse(failing(), close=lambda: closed.append(1)))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["message"] == "the engine has failed"
    assert closed == [1]

    async def broken():
        raise KeyError("x")
        yield b""

    sent = run(EventStreamResponse(broken()))
    assert sent[0]["status"] == 500 and b"KeyError" in sent[1]["body"]

    async def slow():
        await asyncio.sleep(0.01)
        yield DONE

    order = []

    async def watch_order():
        response = EventStreamResponse(slow())
        task = asyncio.ensure_future(response({"type": "http"}, lambda: asyncio.Event().wait(),
                                              lambda m: order.append(m["type"]) or _noop()))
        await asyncio.sleep(0.005)
        assert order == []  # nothing written while the body has no chunk yet
        await task

    asyncio.run(watch_order())
    assert order == ["http.response.start", "http.response.body"]


async def _noop():
    return None
