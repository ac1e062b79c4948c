"""The admin's app factory: its internal HTTP+JSON API (docs/cell.md, "Admin API").

Model servers register and heartbeat here and learn what to hold; the gateway reads the routing
view, forwards the Saxml model-management calls and reports replicas that failed it
(admin/model_routes.py, admin/cell_routes.py; errors: admin/errors.py). In the background the
registry's clock ticks: servers whose heartbeats stopped are dropped and their replicas placed
elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.cell_routes import cell_routes
from llmcell.admin.errors import admin_error_handlers
from llmcell.admin.model_routes import model_routes
from llmcell.admin.registry import CellRegistry
from llmcell.config.admin import AdminConfig
from llmcell.edge.metrics import metrics_response
from llmcell.metrics.admin import AdminCollector


def create_admin_app(config: AdminConfig, registry: CellRegistry) -> Starlette:
    probe = httpx.AsyncClient(timeout=1.0)
    metrics = CollectorRegistry()
    ProcessCollector(registry=metrics)
    metrics.register(AdminCollector(registry))

    async def prometheus(request: Request) -> Response:
        return metrics_response(generate_latest(metrics))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "servers": len(registry.servers),
                             "models": len(registry.store.all())})

    @asynccontextmanager
    async def lifespan(app):
        async def upkeep():
            while True:
                await asyncio.sleep(config.heartbeat_interval / 2)
                registry.tick(time.monotonic())

        task = asyncio.create_task(upkeep())
        try:
            yield
        finally:
            task.cancel()
            await probe.aclose()

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *model_routes(config, registry),
        *cell_routes(config, registry, probe),
    ], lifespan=lifespan, exception_handlers=admin_error_handlers())
