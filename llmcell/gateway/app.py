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
from llmcell.edge.admin_client import admin_client
from llmcell.gateway.admin_proxy import admin_proxy_routes
from llmcell.gateway.admission import Admission
from llmcell.gateway.cold_start import ColdStart
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.kv_follow import KVFollower
from llmcell.gateway.openai_routes import openai_routes
from llmcell.gateway.response_cache import ResponseCache
from llmcell.gateway.saxml_routes import saxml_routes
from llmcell.gateway.view import CellView
from llmcell.metrics.gateway import GatewayMetrics, MetricsMiddleware
from llmcell.protocol.openapi import gateway_openapi
from llmcell.protocol.saxml import SaxError
from llmcell.router import make_policy
from llmcell.edge.auth import AuthError, Authenticator, AuthMiddleware
from llmcell.edge.errors import openai_error_handlers
from llmcell.gateway.auth import DEFAULT, RULES, auth_error_response
from llmcell.edge.metrics import metrics_response
from llmcell.edge.relay import Relay


def create_gateway_app(config: GatewayConfig, admin_transport: httpx.AsyncBaseTransport | None
                       = None, replica_transport: httpx.AsyncBaseTransport | None = None,
                       relay: Relay | None = None) -> Starlette:
    """The transports and the request path's relay default to the network's (tests pass
    in-process ones)."""
    member = config.security.client  # the gateway's own calls carry the credential and the CA
    admin = admin_client(config.security, config.admin, 10.0, admin_transport)
    replicas = httpx.AsyncClient(**member(  # KV events and tokenizers (few calls)
        timeout=httpx.Timeout(config.request_timeout, connect=2.0), transport=replica_transport))
    view = CellView(config, admin)
    metrics = GatewayMetrics(config.policy)
    cold = ColdStart(view, admin, config.cold_start_held, config.cold_start_timeout,
                     lambda model, s: metrics.cold_start.labels(model).observe(s))
    relay = relay or Relay(config.security.headers(), config.security.verify(),
                           limit=config.replica_connections, connect_timeout=10.0,
                           read_timeout=config.request_timeout)
    forwarder = Forwarder(view, make_policy(config.policy, config.bounded_load), relay, admin,
                          config.retries, metrics.routed, cold)
    admission = Admission(config, view, admin, metrics)
    kv = KVFollower(view, replicas, lambda model, outcome: metrics.kv_routing.labels(
        model, outcome).inc()) if config.policy == "kv_affinity" else None
    if kv is not None:
        metrics.registry.register(kv)
    cache = ResponseCache(config.cache_bytes, config.cache_ttl)
    metrics.cache_bytes.set_function(lambda: cache.bytes)
    sax, on_sax_error = saxml_routes(admin, view, forwarder, admission, config.sax_compat,
                                     config.max_body_bytes, config.default_reserve_tokens)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "admin_reachable": view.admin_ok,
                             "models": {m: len(rs) for m, rs in view.view.models.items()}})

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics.render())

    document = gateway_openapi()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    @asynccontextmanager
    async def lifespan(app):
        followers = [asyncio.create_task(view.follow()),
                     asyncio.create_task(admission.follow())]
        if kv is not None:
            followers.append(asyncio.create_task(kv.follow(config.view_interval)))
        try:
            yield
        finally:
            for task in followers:
                task.cancel()
            if kv is not None:
                await kv.aclose()
            await cold.aclose()
            await replicas.aclose()
            await relay.aclose()
            await admin.aclose()

    refuse = auth_error_response(config.sax_compat)

    async def on_auth_error(request: Request, exc: AuthError) -> Response:
        return refuse(request.scope, exc)

    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if config.security.auth:
        middleware.append(Middleware(
            AuthMiddleware, authenticator=Authenticator(config.security.cell_token,
                                                        lambda: view.keys),
            rules=RULES, default=DEFAULT, error=refuse))
    app = Starlette(  # the request path's routes first: routes are matched in order
        routes=[*openai_routes(view, forwarder, admission, config.max_body_bytes,
                               config.prefix_chars, config.default_reserve_tokens,
                               config.retries, cache,
                               lambda model: metrics.resumed.labels(model).inc(),
                               lambda model, outcome: metrics.cache.labels(model, outcome).inc(),
                               kv, admin),
                Route("/health", health, methods=["GET"]),
                Route("/metrics", prometheus, methods=["GET"]),
                Route("/openapi.json", openapi, methods=["GET"]), *sax,
                *admin_proxy_routes(admin, config.max_file_bytes)],
        lifespan=lifespan,
        exception_handlers={SaxError: on_sax_error, AuthError: on_auth_error,
                            **openai_error_handlers()},
        middleware=middleware)
    app.state.view = view
    app.state.admission = admission
    app.state.kv = kv
    return app
