"""HTTP helpers shared by every llmcell edge (model server, gateway): bounded, strict JSON
bodies and OpenAI-shaped error responses. No engine imports, so the gateway stays light."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from llmcell.protocol.errors import APIError, invalid


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_json(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                       code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes",
                               code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, "the client disconnected while sending the body") from None
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"the request body is not valid UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise invalid("the request body is empty; send a JSON object")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e.msg} at line {e.lineno} "
                      f"column {e.colno}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


async def _on_api_error(request: Request, exc: APIError) -> Response:
    return error_response(exc)


async def _on_http_error(request: Request, exc: HTTPException) -> Response:
    msg = {404: f"no route for {request.method} {request.url.path}",
           405: f"method {request.method} is not allowed on {request.url.path}"}
    return error_response(APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail))))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}"))


def openai_error_handlers() -> dict:
    """Starlette exception handlers answering every error in OpenAI's body shape."""
    return {APIError: _on_api_error, HTTPException: _on_http_error, Exception: _on_unexpected}
