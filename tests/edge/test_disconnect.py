"""Work for a client that leaves is cancelled; work that finishes first is returned."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from llmcell.edge.disconnect import ClientDisconnected, unless_disconnected


def _request(leave_after: float | None) -> Request:
    async def receive():
        if leave_after is None:
            await asyncio.Event().wait()  # the client stays
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


def _long_work(cancelled: asyncio.Event):
    async def work():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    return work


def test_a_client_that_leaves_cancels_the_work():
    cancelled = asyncio.Event()
    work = _long_work(cancelled)

    async def main():
        with pytest.raises(ClientDisconnected):
            await asyncio.wait_for(unless_disconnected(_request(0.01), work()), 5)
        assert cancelled.is_set()

    asyncio.run(main())


def test_work_that_finishes_first_is_returned():
    async def work():
        await asyncio.sleep(0.01)
        return 42

    async def main():
        assert await unless_disconnected(_request(None), work()) == 42
        assert await unless_disconnected(_request(5.0), work()) == 42

    asyncio.run(main())


def test_the_callers_cancellation_reaches_the_work():
    cancelled = asyncio.Event()
    work = _long_work(cancelled)

    async def main():
        outer = asyncio.ensure_future(unless_disconnected(_request(None), work()))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0)
        assert cancelled.is_set()

    asyncio.run(main())
