"""The OpenAI Files and Batch API at the gateway: passed through to the admin, which keeps files
and batches (admin/batch_routes.py). Bodies stream both ways (an upload is not held here), and
the caller's key goes along: the admin checks it again and scopes the files to its tenant. An
upload over the file limit is refused here, from its Content-Length before any of it is read,
or as it streams past the limit.
"""

from __future__ import annotations

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from llmcell.protocol.errors import APIError

PASSED = ("authorization", "content-type", "content-length", "accept")
TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class _TooLarge(Exception):
    pass


def admin_proxy_routes(admin: httpx.AsyncClient, max_file_bytes: int) -> list[Route]:
    most = max_file_bytes + 64 * 1024  # the multipart framing around the file
    too_large = APIError(413, f"the upload is over the file limit of {max_file_bytes} bytes",
                         param="file", code="file_too_large")

    async def limited(request: Request):
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > most:
                raise _TooLarge
            yield chunk

    async def proxy(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items()
                   if k in PASSED and v.isascii() and v.isprintable()}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > most:
            raise too_large  # before reading any of it
        outgoing = admin.build_request(
            request.method, request.url.path, params=request.query_params,
            headers=headers, timeout=TIMEOUT,
            content=limited(request) if request.method == "POST" else None)
        try:
            answer = await admin.send(outgoing, stream=True)
        except _TooLarge:
            raise too_large from None
        except httpx.HTTPError as e:
            raise APIError(503, f"the cell's admin, which keeps files and batches, is not "
                                f"reachable ({type(e).__name__}); retry shortly",
                           headers={"Retry-After": "2"}) from None
        kind = answer.headers.get("content-type", "")
        if answer.status_code >= 400 and not kind.startswith("application/json"):
            text = (await answer.aread()).decode("utf-8", "replace")[:300]
            await answer.aclose()
            raise APIError(answer.status_code, f"the admin refused the request: {text}")
        kept = {k: v for k, v in answer.headers.items()
                if k in ("content-type", "retry-after")}
        return StreamingResponse(answer.aiter_bytes(), answer.status_code, headers=kept,
                                 background=BackgroundTask(answer.aclose))

    methods = ["GET", "POST", "DELETE"]
    return [Route("/v1/files", proxy, methods=methods),
            Route("/v1/files/{rest:path}", proxy, methods=methods),
            Route("/v1/batches", proxy, methods=methods),
            Route("/v1/batches/{rest:path}", proxy, methods=methods)]
