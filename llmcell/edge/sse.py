"""Server-sent events exactly as OpenAI streams them: `data: {json}\\n\\n` ... `data: [DONE]\\n\\n`,
and the ASGI response that delivers them.

`EventStreamResponse` sends each chunk as the body yields it and stops when the client goes away.
It is leaner than Starlette's `StreamingResponse` (one watcher task, no task group). Writes are
what a streamed answer costs on a busy server (each one a syscall that also wakes the client), so:
- the status line and headers go out with the first chunk, not before: a request read while
  others wait behind it is not held up by a write, the status is still open until the first token
  (a body that fails before it gets a proper error status, and a gateway can fail over), and the
  client's first byte is its first token;
- a chunk that ends with `data: [DONE]` ends the response in the same write (the client's next
  request is then not read behind another one).
It always ends the stream it was given: the body is run to its end (work after DONE, such as
recording metrics, still happens) or closed, and the `close` callback runs however the response
ends, even when the body never started, so a request submitted to an engine before the response
began is aborted, not leaked.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable, Mapping

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from llmcell.protocol.errors import APIError

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
        started = ended = False
        chunks = self.body_iterator.__aiter__()
        try:
            while True:  # to the body's end: it may have work after DONE
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as e:
                    if started:
                        raise  # the status is out: the connection is cut, the client sees it
                    state["done"] = True
                    err = e if isinstance(e, APIError) else APIError(
                        500, f"internal error: {type(e).__name__}: {e}")
                    await JSONResponse(err.body(), err.status, err.headers)(scope, receive, send)
                    return
                if ended:
                    continue
                if not started:
                    await self._start(send)
                    started = True
                ended = chunk.endswith(DONE)
                await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                state["done"] = ended  # the response is over: no longer a disconnect
            if not started:
                await self._start(send)
            if not ended:
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

    async def _start(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
