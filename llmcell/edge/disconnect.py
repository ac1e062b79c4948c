"""Work done for a client that may leave: a forwarded request ends when its client disconnects.

A streamed response notices a gone client at its next write; a plain (non-streaming) request
would otherwise wait for its whole answer, and the replica behind it would keep generating for
no one. `unless_disconnected` races the work against the client's `http.disconnect`; a departure
cancels the work, which closes the upstream request, so the replica aborts it too.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request

T = TypeVar("T")
CLIENT_CLOSED = 499
"""The status recorded for a request whose client left first (nginx's convention)."""


class ClientDisconnected(Exception):
    """The client went away before the work finished; the work was cancelled."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, unless the client disconnects first: then the work is cancelled and
    ClientDisconnected raised. Call it after the body has been read.

    The work runs in the caller's task; one watcher task cancels it if the client leaves (no
    task for the work, no `asyncio.wait`: this is on every request's path)."""
    current = asyncio.current_task()
    watcher = asyncio.ensure_future(_disconnected(request))
    gone = False

    def on_gone(_: asyncio.Future) -> None:
        nonlocal gone
        if not watcher.cancelled() and watcher.exception() is None:
            gone = True
            current.cancel()

    watcher.add_done_callback(on_gone)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.remove_done_callback(on_gone)
        watcher.cancel()
