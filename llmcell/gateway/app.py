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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.middleware import Middleware
from starlette.routing import Route

from llmcell.config.gateway import GatewayConfig
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.openai_routes import openai_routes
from llmcell.gateway.saxml_routes import saxml_routes
from llmcell.gateway.view import CellView
from llmcell.metrics.gateway import GatewayMetrics, MetricsMiddleware
from llmcell.protocol.saxml import SaxError
from llmcell.router import make_policy
from llmcell.edge.errors import openai_error_handlers
from llmcell.edge.metrics import metrics_response


def create_gateway_app(config: GatewayConfig) -> Starlette:
    admin = httpx.AsyncClient(base_url=config.admin.rstrip("/"), timeout=10.0)
    replicas = httpx.AsyncClient(
        timeout=httpx.Timeout(config.request_timeout, connect=2.0),
        limits=httpx.Limits(max_connections=2048, max_keepalive_connections=512))
    view = CellView(config, admin)
    metrics = GatewayMetrics(config.policy)
    forwarder = Forwarder(view, make_policy(config.policy, config.bounded_load), replicas, admin,
                          config.retries, metrics.routed)
    sax, on_sax_error = saxml_routes(admin, view, forwarder, config.sax_compat,
                                     config.max_body_bytes)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "admin_reachable": view.admin_ok,
                             "models": {m: len(rs) for m, rs in view.view.models.items()}})

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics.render())

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
        routes=[Route("/health", health, methods=["GET"]),
                Route("/metrics", prometheus, methods=["GET"]), *sax,
                *openai_routes(view, forwarder, config.max_body_bytes, config.prefix_chars)],
        lifespan=lifespan,
        exception_handlers={SaxError: on_sax_error, **openai_error_handlers()},
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)])
    app.state.view = view
    return app
