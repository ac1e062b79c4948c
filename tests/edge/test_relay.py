"""The request path's client against a real server on loopback: what it sends, the ceiling that
answers at once, errors it normalises, streams as they arrive, idle connections reaped."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmcell.edge.relay import Relay, RelayBusy, RelayError
from tests.server.conftest import free_port


class Peer:
    """A tiny HTTP/1.1 server (asyncio streams): records requests and open connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[tuple[str, dict, bytes]] = []
        self.open = 0
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v for k, v in (l.split(": ", 1) for l in lines[1:] if l)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                path = lines[0].split()[1]
                self.seen.append((path, headers, body))
                if path == "/hold":
                    await self.release.wait()
                if path == "/stream":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    for part in (b"data: 1\n\n", b"data: 2\n\n"):
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                        await writer.drain()
                        await asyncio.sleep(0.05)
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


def test_relay_against_a_real_server():
    async def main():
        peer = Peer()
        server = await asyncio.start_server(peer.handle, "127.0.0.1", peer.port)
        base = f"http://127.0.0.1:{peer.port}"
        relay = Relay({"Authorization": "Bearer cell"}, limit=2, idle_timeout=0.3)
        try:
            r = await relay.post(base + "/v1/chat/completions", json.dumps({"a": 1}).encode())
            assert (r.status, await r.read()) == (200, b"ok")
            path, headers, body = peer.seen[-1]
            assert headers["authorization"] == "Bearer cell"
            assert headers["content-type"] == "application/json" and json.loads(body) == {"a": 1}
            assert relay.in_flight == 0

            r = await relay.post(base + "/stream", b"{}")
            assert [c async for c in r.chunks()] == [b"data: 1\n\n", b"data: 2\n\n"]

            held = [asyncio.create_task(relay.post(base + "/hold", b"{}")) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(RelayBusy):  # the configured ceiling answers at once
                await relay.post(base + "/", b"{}")
            peer.release.set()
            for task in held:
                (await task).close()
            assert relay.in_flight == 0

            assert peer.open >= 1
            await asyncio.sleep(1.0)  # idle past idle_timeout: the relay closed them
            assert peer.open == 0
        finally:
            await relay.aclose()
            server.close()
        gone = Relay()
        with pytest.raises(RelayError):  # nothing listens there any more
            await gone.post(base + "/", b"{}")
        await gone.aclose()

    asyncio.run(main())
