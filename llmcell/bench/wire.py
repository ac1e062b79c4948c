"""A minimal HTTP/1.1 client for streaming POSTs, for benchmarks that measure a server's own cost.

General clients spend real time per request (httpx builds, validates and parses each one: about a
millisecond on a small machine, in the same process and on the same cores as the server under
test), and that time lands in the figure being measured. This one sends pre-encoded bytes on a
kept-alive connection and decodes the chunked answer into SSE `data:` payloads, so the client's
share of a time to first token is a few tens of microseconds. Plain HTTP only (no TLS, no
redirects, no proxies): it is a measuring tool, not a general client.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import AsyncIterator


class WireError(RuntimeError):
    """The server answered with an error status, or broke the HTTP framing."""


class SSEConnection:
    """One kept-alive connection; requests on it run one after another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> "SSEConnection":
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None

    @staticmethod
    def request_bytes(host: str, path: str, payload: dict) -> bytes:
        """The whole request, encoded once (before the clock starts, if the caller wishes)."""
        body = json.dumps(payload).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def events(self, request: bytes) -> AsyncIterator[bytes]:
        """Send `request`; yield the payload of each SSE `data:` line of the answer as it comes."""
        if self._writer is None or self._reader.at_eof():  # the server closed an idle connection
            self.close()
            await self.open()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in header_lines if line)}
        if headers.get("transfer-encoding", "").lower() != "chunked":
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
            raise WireError(f"HTTP {status}: {body.decode(errors='replace')[:500]}")
        pending = b""
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                break
            pending += data[:-2]
            *complete, pending = pending.split(b"\n\n")
            for block in complete:
                if block.startswith(b"data: "):
                    yield block[6:]
        if status != 200:
            raise WireError(f"HTTP {status}")
