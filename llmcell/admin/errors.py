"""The admin API's errors: `{"detail": message}` with a 4xx/5xx status, as Saxml's v2 REST
server shapes them, whatever raised them (a route, a malformed wire message, a missing record)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmcell.admin.database import Fenced, StateUnavailable
from llmcell.admin.registry import Conflict, NotFound
from llmcell.edge.body import read_json
from llmcell.edge.errors import error_response
from llmcell.protocol.errors import APIError
from llmcell.protocol.cell import WireError


class AdminError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def read_body(request: Request, limit: int):
    """The body (None when empty), through the edges' one strict reader."""
    return await read_json(request, limit, lambda status, message, code: AdminError(
        status, message), empty=None, object_only=False)


async def _on_admin_error(request: Request, exc: AdminError) -> Response:
    return JSONResponse({"detail": exc.detail}, exc.status)


async def _on_api_error(request: Request, exc: APIError) -> Response:
    """The OpenAI routes' errors (files, batches) in OpenAI's shape."""
    return error_response(exc)


async def _on_wire_error(request: Request, exc: WireError) -> Response:
    return JSONResponse({"detail": str(exc)}, 400)


async def _on_not_found(request: Request, exc: NotFound) -> Response:
    what = exc.args[0]
    if str(what).startswith("/sax/"):
        return JSONResponse({"detail": f"model {what} is not published"}, 404)
    return JSONResponse({"detail": f"server {what} is not registered; register again"}, 404)


async def _on_conflict(request: Request, exc: Conflict) -> Response:
    return JSONResponse({"detail": str(exc)}, 409)


async def _on_http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"detail": f"{request.method} {request.url.path}: {exc.detail}"},
                        exc.status_code)


async def _on_state_unavailable(request: Request, exc: StateUnavailable) -> Response:
    return JSONResponse({"detail": f"the admin's state is unreachable: {exc}; retry shortly"},
                        503, headers={"Retry-After": "1"})


async def _on_fenced(request: Request, exc: Fenced) -> Response:
    return JSONResponse({"detail": f"this admin no longer leads ({exc}); retry: the cell's "
                                   "other admin takes the call"}, 503, headers={"Retry-After": "1"})


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)


def admin_error_handlers() -> dict:
    return {AdminError: _on_admin_error, APIError: _on_api_error, WireError: _on_wire_error,
            NotFound: _on_not_found, Conflict: _on_conflict,
            StateUnavailable: _on_state_unavailable, Fenced: _on_fenced,
            HTTPException: _on_http_error,
            Exception: _on_unexpected}
