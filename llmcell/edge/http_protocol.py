"""uvicorn's HTTP protocol (httptools), writing each response's head in the same write as its first
body bytes. Used by every llmcell server (model server, gateway): `uvicorn.Config(http=...)`.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, then
each body message in a write of its own. On loopback or a LAN a write is a syscall that also wakes
the reader, and on a small machine both sides' wake-ups queue behind each other: a JSON answer
costs two, a streamed chat's first token two. Here the head is held until the first body write
and goes out with it (as nginx and most HTTP servers do), so those cost one. Nothing else changes:
the bytes on the wire are the same, and a response whose app never sends a body still gets its
head (uvicorn ends every response with a body write).

This leans on uvicorn's `RequestResponseCycle` writing through its `transport` attribute; where
httptools or those internals are missing, `http_protocol()` falls back to uvicorn's own choice.
"""

from __future__ import annotations

LISTEN_BACKLOG = 65535
"""Connections the kernel queues before they are accepted (it caps this at
net.core.somaxconn): a burst of thousands of streams connecting at once waits in the queue
instead of retrying its SYN after a second."""


class _HeadHolder:
    """A connection's transport for one response: holds the first write (the head) and sends it
    with the next one; transparent after that."""

    __slots__ = ("_transport", "_held", "_sent")

    def __init__(self, transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._sent = False

    def write(self, data: bytes) -> None:
        if self._sent:
            self._transport.write(data)
        elif self._held is None:
            self._held = data
        else:
            self._sent = True
            self._transport.write(self._held + data)
            self._held = None

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def http_protocol():
    """The protocol class for `uvicorn.Config(http=...)`, or "auto" where it cannot be built."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:  # no httptools: uvicorn's h11 protocol, two writes per response
        return "auto"
    if not hasattr(RequestResponseCycle, "send"):
        return "auto"

    class HeadWithBodyCycle(RequestResponseCycle):
        async def send(self, message) -> None:
            if message["type"] == "http.response.start" and not self.response_started:
                self.transport = _HeadHolder(self.transport)
            await super().send(message)

    class HeadWithBodyProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if type(self.cycle) is RequestResponseCycle:  # created just now, not yet running
                self.cycle.__class__ = HeadWithBodyCycle

    return HeadWithBodyProtocol
