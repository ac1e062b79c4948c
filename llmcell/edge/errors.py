"""OpenAI-shaped errors for the edges that speak the OpenAI API (model server, gateway): the
exception handlers, and the body reader with its errors in that shape."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmcell.edge.body import read_json
from llmcell.protocol.errors import APIError


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def openai_error(status: int, message: str, code: str | None) -> APIError:
    """The OpenAI-shaped error for a body problem (`body.ErrorFactory`)."""
    return APIError(status, message, code=None if code == "invalid_request_error" else code)


async def read_openai_json(request: Request, limit: int) -> dict:
    """The request's JSON object (`body.read_json`), errors in OpenAI's shape."""
    return await read_json(request, limit, openai_error)


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
