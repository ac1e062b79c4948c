"""The gateway's app factory: the cell's one front door (port 8888).

Saxml REST and the OpenAI API side by side; the admin-facing Saxml calls (publish, update,
unpublish) are separable from the public ones should auth split them later. The routing view
follows the admin in the background.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.config.gateway import GatewayConfig
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.openai_routes import openai_routes
from llmcell.gateway.saxml_routes import saxml_routes
from llmcell.gateway.view import CellView
from llmcell.protocol.errors import APIError
from llmcell.protocol.saxml import SaxError
from llmcell.router import make_policy
from llmcell.server.http import error_response


def create_gateway_app(config: GatewayConfig) -> Starlette:
    admin = httpx.AsyncClient(base_url=config.admin.rstrip("/"), timeout=10.0)
    replicas = httpx.AsyncClient(
        timeout=httpx.Timeout(config.request_timeout, connect=2.0),
        limits=httpx.Limits(max_connections=2048, max_keepalive_connections=512))
    view = CellView(config, admin)
    forwarder = Forwarder(view, make_policy(config.policy, config.bounded_load), replicas, admin,
                          config.retries)
    sax, on_sax_error = saxml_routes(admin, view, forwarder, config.sax_compat,
                                     config.max_body_bytes)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "admin_reachable": view.admin_ok,
                             "models": {m: len(rs) for m, rs in view.view.models.items()}})

    async def on_api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        msg = {404: f"no route for {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}
        return error_response(APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail))))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}"))

    @asynccontextmanager
    async def lifespan(app):
        follower = asyncio.create_task(view.follow())
        try:
            yield
        finally:
            follower.cancel()
            await replicas.aclose()
            await admin.aclose()

    app = Starlette(
        routes=[Route("/health", health, methods=["GET"]), *sax,
                *openai_routes(view, forwarder, config.max_body_bytes, config.prefix_chars)],
        lifespan=lifespan,
        exception_handlers={SaxError: on_sax_error, APIError: on_api_error,
                            HTTPException: on_http_error, Exception: on_unexpected})
    app.state.view = view
    return app
