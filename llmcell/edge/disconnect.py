"""Work done for a client that may leave: a forwarded request ends when its client disconnects.

A streamed response notices a gone client at its next write; a plain (non-streaming) request
would otherwise wait for its whole answer, and the replica behind it would keep generating for
no one. `unless_disconnected` races the work against the client's `http.disconnect`; a departure
cancels the work, which closes the upstream request, so the replica aborts it too.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    ClientDisconnected raised. Call it after the body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected()
