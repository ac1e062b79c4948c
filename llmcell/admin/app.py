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
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.audit import Audit
from llmcell.admin.batch_routes import batch_routes
from llmcell.admin.cell_routes import cell_routes
from llmcell.admin.errors import admin_error_handlers
from llmcell.admin.key_routes import key_routes
from llmcell.admin.keys import KeyStore
from llmcell.admin.leadership import Leadership
from llmcell.admin.model_routes import model_routes
from llmcell.admin.registry import CellRegistry
from llmcell.admin.standby import StandbyGuard
from llmcell.admin.group_scaler import GroupScaler
from llmcell.admin.response_store import ResponseStore, response_routes
from llmcell.admin.tenant_routes import tenant_routes
from llmcell.admin.tenants import TenantStore
from llmcell.batch.blobs import Blobs
from llmcell.batch.runner import BatchRunner
from llmcell.batch.store import BatchStore
from llmcell.config.admin import AdminConfig
from llmcell.encryption import read_key
from llmcell.edge.auth import CELL_ONLY, OPEN, AuthError, Authenticator, AuthMiddleware, KeyTable
from llmcell.edge.metrics import metrics_response
from llmcell.metrics.admin import AdminCollector

RULES = [
    ("*", "/health", OPEN),
    ("GET", "/ready", OPEN),
    ("*", "/cell/*", CELL_ONLY),
    ("GET", "/metrics", "viewer"),
    ("GET", "/prometheus/targets", "viewer"),
    ("GET", "/models*", "viewer"),
    ("GET", "/autoscaler/events", "viewer"),
    ("*", "/v1/files*", "user"),
    ("*", "/v1/batches*", "user"),
]
"""Who may call what on the admin (with auth on); the rest (publish, update, unpublish, keys)
needs the `admin` role or the cell credential."""


def _auth_error(scope, e: AuthError) -> Response:
    return JSONResponse({"detail": e.message}, e.status,
                        headers={"WWW-Authenticate": "Bearer"} if e.status == 401 else None)


def create_admin_app(config: AdminConfig, registry: CellRegistry,
                     leadership: Leadership | None = None) -> Starlette:
    """`leadership`: who leads among admins sharing the database (default: elected among
    those on this database; on SQLite this admin always leads)."""
    if leadership is None:
        leadership = Leadership(registry.store.db, config.advertised, config.leader_lease)
    probe = httpx.AsyncClient(**config.security.client(timeout=1.0))
    with registry.store.db.unfenced():  # what every admin ensures at start, leader or not
        keys = KeyStore(registry.store.db,
                        read_key(config.master_key_file) if config.master_key_file else None)
        if config.bootstrap_admin_key is not None:
            keys.ensure(config.bootstrap_admin_key, "admin", "admin")
        tenants = TenantStore(registry.store.db)
        batches = BatchStore(registry.store.db)
        responses = ResponseStore(registry.store.db, config.response_retention)
    audit = Audit(config.audit_path or config.state_path.with_suffix(".audit.jsonl"),
                  registry.store.db)
    cached: list = [None, -1]  # the key table, and the store version it was made at

    def key_table() -> KeyTable:
        if cached[1] != keys.version or not leadership.is_leader:  # a standby reads afresh
            cached[:] = [KeyTable.of(keys.secret, keys.all()), keys.version]
        return cached[0]

    blobs = Blobs(config.blobs)
    runner = None
    if config.batch_gateway is not None:
        gateway = httpx.AsyncClient(**config.security.client(
            base_url=config.batch_gateway.rstrip("/"), timeout=httpx.Timeout(600.0, connect=5.0),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256)))

        def concurrency() -> int:
            if config.batch_concurrency:
                return config.batch_concurrency
            return sum(r.slots or 8 for rs in registry.routes().models.values() for r in rs)

        runner = BatchRunner(batches, blobs, gateway, concurrency)

    metrics = CollectorRegistry()
    ProcessCollector(registry=metrics)
    metrics.register(AdminCollector(registry, batches))

    async def prometheus(request: Request) -> Response:
        return metrics_response(generate_latest(metrics))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "servers": len(registry.servers),
                             "models": len(registry.store.all()),
                             "leader": leadership.leader, "leading": leadership.is_leader})

    async def ready(request: Request) -> Response:
        """200 on the leader only: a Service over the admins sends its calls there."""
        if leadership.is_leader:
            return JSONResponse({"status": "leader", "token": registry.store.db.token})
        return JSONResponse({"status": "standby", "leader": leadership.leader}, 503)

    scaler = None
    if config.scale_groups is not None:
        scaler = GroupScaler(httpx.AsyncClient(base_url=config.kube_api, timeout=5.0,
                                               verify=config.kube_ca_file),
                             config.kube_namespace, config.scale_groups,
                             Path(config.kube_token_file), config.min_groups, config.max_groups)

    @asynccontextmanager
    async def lifespan(app):
        async def upkeep():
            while True:
                await asyncio.sleep(config.heartbeat_interval / 2)
                if leadership.is_leader:
                    registry.tick(time.monotonic())
                    if scaler is not None:
                        await scaler.apply(registry.store.all())

        batch_task: list[asyncio.Task] = []

        def role(leading: bool) -> None:
            """Only the leader places replicas and runs batches."""
            for task in batch_task:
                task.cancel()
            batch_task.clear()
            registry.lead(time.monotonic())
            if leading and runner is not None:
                batch_task.append(asyncio.create_task(runner.run()))

        tasks = [asyncio.create_task(upkeep()), asyncio.create_task(leadership.run(role))]
        try:
            yield
        finally:
            for task in tasks + batch_task:
                task.cancel()
            await probe.aclose()
            if scaler is not None:
                await scaler.client.aclose()
            if runner is not None:
                await runner.gateway.aclose()

    middleware = [Middleware(StandbyGuard, leadership=leadership)]
    if config.security.auth:
        middleware.append(Middleware(AuthMiddleware, authenticator=Authenticator(
            config.security.cell_token, key_table), rules=RULES, default="admin",
            error=_auth_error))
    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *model_routes(config, registry, audit),
        *cell_routes(config, registry, probe),
        *key_routes(config, keys, tenants, audit),
        *tenant_routes(config, keys, tenants, audit),
        *batch_routes(config, registry, batches, blobs, lambda: runner is not None),
        *response_routes(responses, max(config.max_body_bytes, 16 << 20)),
    ], lifespan=lifespan, exception_handlers=admin_error_handlers(), middleware=middleware)
