"""The benchmark's lean HTTP client against a real uvicorn server: SSE payloads in order across
chunk boundaries, kept-alive reuse, reconnection after the server closed an idle connection, and
error statuses raised with the server's message."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmcell.bench.wire import SSEConnection, WireError
from llmcell.edge.sse import DONE, EventStreamResponse, event
from tests.server.conftest import free_port


async def sse(request):
    async def body():
        yield event({"i": 0}) + event({"i": 1})[:7]  # an event split across two chunks
        yield event({"i": 1})[7:]
        yield event({"i": 2, "text": "caf\u00e9 \u2615"})
        yield DONE
    return EventStreamResponse(body())


async def bad(request):
    return JSONResponse({"error": {"message": "'max_tokens' must be >= 1"}}, 400)


@pytest.fixture(scope="module")
def port():
    app = Starlette(routes=[Route("/sse", sse, methods=["POST"]),
                            Route("/bad", bad, methods=["POST"])])
    p = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=p, log_level="warning",
                                           timeout_keep_alive=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield p
    server.should_exit = True
    thread.join(5)


def test_events_in_order_over_a_kept_alive_connection_that_reconnects(port):
    async def main():
        conn = SSEConnection("127.0.0.1", port)
        request = SSEConnection.request_bytes("127.0.0.1", "/sse", {"x": 1})
        first = [p async for p in conn.events(request)]
        writer = conn._writer
        again = [p async for p in conn.events(request)]
        assert conn._writer is writer  # the same connection served both
        await asyncio.sleep(1.5)  # the server closes it (keep-alive timeout 1 s)
        third = [p async for p in conn.events(request)]
        conn.close()
        return first, again, third

    first, again, third = asyncio.run(main())
    expected = [b'{"i":0}', b'{"i":1}', event({"i": 2, "text": "caf\u00e9 \u2615"})[6:-2],
                b"[DONE]"]
    assert first == again == third == expected


def test_error_status_raises_with_the_message(port):
    async def main():
        conn = SSEConnection("127.0.0.1", port)
        with pytest.raises(WireError, match=r"HTTP 400: .*max_tokens"):
            async for _ in conn.events(SSEConnection.request_bytes("127.0.0.1", "/bad", {})):
                pass
        conn.close()

    asyncio.run(main())
