"""A stub OpenAI upstream for the proxy benchmark: answers in a few microseconds of CPU, so what
is measured in front of it is the proxy's own cost. asyncio + httptools, HTTP/1.1 keep-alive.

    POST /v1/chat/completions, /v1/completions   a fixed answer; `"stream": true` sends
        `chunks` SSE chunks (default 16), `interval` seconds apart (default 0: at once)
    GET /v1/models, /health, /metrics           what a model server's upstream client polls

    python bench/proxy_stub.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools

MODEL = "stub"
ANSWER = json.dumps({
    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model",
                                                 "max_model_len": 4096}]}).encode()
METRICS = (b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
           b"vllm:kv_cache_usage_perc 0\n")


def _chunk(i: int) -> bytes:
    body = json.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0,
                       "model": MODEL, "choices": [{"index": 0, "delta": {"content": f"t{i} "},
                                                    "finish_reason": None}]})
    data = f"data: {body}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _response(status: bytes, body: bytes, kind: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + kind + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class StubProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.body = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, body = self.url.split(b"?")[0], bytes(self.body)
        self.url, self.body = b"", bytearray()
        if url in (b"/v1/chat/completions", b"/v1/completions"):
            try:
                req = json.loads(body) if body else {}
            except ValueError:
                req = {}
            if req.get("stream"):
                asyncio.get_running_loop().create_task(self.stream(
                    int(req.get("chunks", 16)), float(req.get("interval", 0))))
                return
            self.transport.write(_response(b"200 OK", ANSWER))
        elif url == b"/v1/models":
            self.transport.write(_response(b"200 OK", MODELS))
        elif url == b"/health":
            self.transport.write(_response(b"200 OK", b""))
        elif url == b"/metrics":
            self.transport.write(_response(b"200 OK", METRICS, b"text/plain"))
        else:
            self.transport.write(_response(b"404 Not Found", b"{}"))

    async def stream(self, chunks: int, interval: float) -> None:
        t = self.transport
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")
        for i in range(chunks):
            if interval:
                await asyncio.sleep(interval)
            if t.is_closing():
                return
            t.write(_chunk(i))
        done = b"data: [DONE]\n\n"
        t.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(StubProtocol, host, port,
                                                            backlog=65535)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
