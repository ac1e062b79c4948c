"""Server-sent events exactly as OpenAI streams them: `data: {json}\\n\\n` ... `data: [DONE]\\n\\n`,
and the ASGI response that delivers them.

`EventStreamResponse` sends each chunk as the body yields it and stops when the client goes away.
It is leaner than Starlette's `StreamingResponse` (one watcher task, no task group: the first
token leaves sooner) and it always ends the stream it was given: the body is closed and the
`close` callback runs however the response ends, even when the body never started, so a request
submitted to an engine before the response began is aborted, not leaked.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
                 close: Callable[[], None] | None = None, status_code: int = 200) -> None:
        self.body_iterator = body
        self.on_close = close
        self.status_code = status_code
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                           **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        state = {"gone": False, "done": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["done"]:
                state["gone"] = True
                task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            state["done"] = True
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            task.uncancel()  # the client left: end quietly
        finally:
            state["done"] = True
            watcher.cancel()
            try:
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()
