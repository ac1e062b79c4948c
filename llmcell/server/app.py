"""The model server's app factory: the OpenAI routes (server/openai_routes.py) over the
`ModelBackend`s of a `ModelHost`, plus health, readiness and metrics.

Every route reads its body through the shared edge (llmcell/edge: at most `max_body_bytes`,
strict JSON), validates through `llmcell.protocol` and answers in OpenAI's shapes, errors
included: bad input is a 4xx with a message, never a 500 or a hang.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.config.server import ServerConfig
from llmcell.edge.auth import CELL_ONLY, OPEN, AuthError, Authenticator, AuthMiddleware
from llmcell.edge.errors import openai_error_handlers
from llmcell.edge.metrics import metrics_response
from llmcell.server.host import ModelHost
from llmcell.server.metrics import ServerMetrics
from llmcell.server.openai_routes import openai_routes
from llmcell.server.prefix_routes import prefix_routes
from llmcell.protocol.errors import APIError
from llmcell.server.state import ServerState


RULES = [("GET", "/health", OPEN), ("GET", "/ready", OPEN)]
"""With auth on, the probes are open and everything else needs the cell credential: a request
that skips the gateway is refused."""


def _auth_error(scope, e: AuthError) -> Response:
    return JSONResponse(APIError(e.status, e.message, code=e.code).body(), e.status)


def create_app(config: ServerConfig, host: ModelHost, metrics: ServerMetrics,
               starting=None) -> Starlette:
    """`starting`: coroutine function run in the background at start-up (loading the standalone
    model, or joining the cell); an exception it raises is reported on /ready."""
    state = ServerState(config, host, metrics)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Standalone: 200 once the model is loaded and warmed. In a cell: 200 while the process
        serves (models come and go as the admin assigns them; each one's state is listed)."""
        if state.start_error is not None:
            return JSONResponse({"status": "failed", "error": str(state.start_error)}, 503)
        if state.draining:
            return JSONResponse({"status": "draining"}, 503)
        loads = {name: b.load() for name, b in host.backends.items()}
        if config.admin is None and not any(l.ready for l in loads.values()):
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "models": {
            name: {"ready": l.ready, "running": l.running, "waiting": l.waiting,
                   "kv_cache_usage": l.kv_cache_usage} for name, l in loads.items()}})

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics.render())

    @asynccontextmanager
    async def lifespan(app):
        async def start():
            try:
                if starting is not None:
                    await starting()
            except Exception as e:  # reported on /ready; the process stays up to say why
                state.start_error = e

        starter = asyncio.create_task(start())
        try:
            yield
        finally:
            starter.cancel()
            for b in list(host.backends.values()):
                await b.stop()

    routes = [
        *openai_routes(state),
        *prefix_routes(host),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    middleware = []
    if config.security.auth:  # in a cell with auth on, only its members call a server
        middleware.append(Middleware(
            AuthMiddleware, authenticator=Authenticator(config.security.cell_token, lambda: None),
            rules=RULES, default=CELL_ONLY, error=_auth_error))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=openai_error_handlers(),
                    middleware=middleware)
    app.state.server = state
    return app
