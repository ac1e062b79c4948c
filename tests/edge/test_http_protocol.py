"""A response's head leaves in the same write as its first body bytes (real uvicorn on loopback,
the server's writes recorded at its transport)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmcell.edge.http_protocol import _HeadHolder, http_protocol
from llmcell.edge.sse import DONE, EventStreamResponse, event


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def test_the_head_is_held_until_the_next_write_then_writes_pass_through():
    inner = Recorder()
    holder = _HeadHolder(inner)
    holder.write(b"HEAD\r\n\r\n")
    assert inner.writes == []
    holder.write(b"body1")
    holder.write(b"body2")
    assert inner.writes == [b"HEAD\r\n\r\nbody1", b"body2"]
    assert holder.is_closing() is False  # everything else is the transport's


async def _exchange(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


def test_a_real_server_writes_head_and_first_chunk_together():
    protocol = http_protocol()
    assert protocol != "auto"  # httptools is a dependency
    writes: list[bytes] = []

    class Recording(protocol):
        def connection_made(self, transport) -> None:
            real = transport

            class Spy:
                def write(self, data):
                    writes.append(bytes(data))
                    real.write(data)

                def __getattr__(self, name):
                    return getattr(real, name)

            super().connection_made(Spy())

    async def stream(request):
        async def body():
            yield event({"n": 1})
            await asyncio.sleep(0.05)
            yield event({"n": 2}) + DONE

        return EventStreamResponse(body())

    async def plain(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/stream", stream), Route("/plain", plain)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=Recording,
                                           log_level="warning", lifespan="off"))

    async def main():
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            streamed = await _exchange(port, "/stream")
            n_stream = len(writes)
            plain_answer = await _exchange(port, "/plain")
        finally:
            server.should_exit = True
            await task
        return streamed, n_stream, plain_answer

    streamed, n_stream, plain_answer = asyncio.run(main())
    assert streamed.startswith(b"HTTP/1.1 200") and b'{"n":1}' in streamed and DONE in streamed
    first, second = writes[:n_stream]
    assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
    assert b'data: {"n":1}' in first and b'{"n":2}' not in first
    assert b'data: {"n":2}' in second and second.endswith(b"0\r\n\r\n")
    assert len(writes) == n_stream + 1  # the JSON answer: head and body in one write
    assert writes[-1].startswith(b"HTTP/1.1 200") and writes[-1].endswith(b'{"ok":true}')
    assert plain_answer.endswith(b'{"ok":true}')
