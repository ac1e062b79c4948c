"""The admin's internal HTTP+JSON API (documented in the README, "Admin API").

Model servers register and heartbeat here and learn what to hold; the gateway reads the routing
view, forwards the Saxml model-management calls and reports replicas that failed it. Errors are
`{"detail": message}` with a 4xx/5xx status, as Saxml's v2 REST server shapes them.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from llmcell.admin.placement import ModelSpec
from llmcell.admin.registry import CellRegistry, NotFound
from llmcell.admin.sizing import replica_size
from llmcell.config.admin import AdminConfig
from llmcell.edge.body import read_json
from llmcell.edge.metrics import metrics_response
from llmcell.metrics.admin import AdminCollector, scrape_targets
from llmcell.protocol.cell import ReplicaReport, ServerInfo, WireError
from llmcell.protocol.saxml import CELL_PATH, SaxError, model_name, parse_publish


class AdminError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def _json(request: Request, limit: int):
    """The body (None when empty), through the edges' one strict reader."""
    return await read_json(request, limit, lambda status, message, code: AdminError(
        status, message), empty=None, object_only=False)


def _reports(data) -> tuple[ReplicaReport, ...]:
    items = data.get("replicas", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise WireError("field 'replicas' must be a list")
    return tuple(ReplicaReport.from_json(r) for r in items)


GATEWAY_TTL = 30.0
"""Seconds a gateway stays a scrape target after it last read the routing view."""


def create_admin_app(config: AdminConfig, registry: CellRegistry) -> Starlette:
    now = time.monotonic
    probe = httpx.AsyncClient(timeout=1.0)
    gateways: dict[str, float] = {}
    """Gateways that read the routing view lately (URL -> when), for service discovery."""
    metrics = CollectorRegistry()
    ProcessCollector(registry=metrics)
    metrics.register(AdminCollector(registry))

    def listcell(spec: ModelSpec) -> dict:
        return {"model": spec.model, "model_path": spec.model_path,
                "checkpoint": spec.checkpoint, "max_replicas": spec.replicas,
                "active_replicas": registry.active_replicas(spec.model)}

    async def sized(body) -> ModelSpec:
        try:
            req = parse_publish(body, "v2")
        except SaxError as e:
            raise AdminError(e.status, e.message) from None
        try:
            size = await asyncio.to_thread(replica_size, req.model_path, req.checkpoint,
                                           config.bytes_per_param, config.kv_reserve_bytes)
        except (ValueError, OSError) as e:
            external = (registry.external_memory(req.model_path) if req.checkpoint == "None"
                        else None)
            if external is None:
                raise AdminError(400, f"model {req.model}: cannot load its source: {e}; nor does "
                                      "a joined server's external engine serve it under that "
                                      "name") from None
            return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas, external)
        return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas,
                         size.memory_bytes)

    async def publish(request: Request) -> Response:
        spec = await sized(await _json(request, config.max_body_bytes))
        if registry.store.get(spec.model) is not None:
            raise AdminError(409, f"model {spec.model} is already published; use update")
        registry.publish(spec, now())
        return JSONResponse(dict(listcell(spec), replicas=spec.replicas,
                                 memory_bytes=spec.memory_bytes))

    async def update(request: Request) -> Response:
        spec = await sized(await _json(request, config.max_body_bytes))
        registry.model(spec.model)  # 404 when not published
        registry.publish(spec, now())
        return JSONResponse(dict(listcell(spec), replicas=spec.replicas,
                                 memory_bytes=spec.memory_bytes))

    def _name(request: Request) -> str:
        try:
            return model_name("/" + request.path_params["model"].lstrip("/"))
        except SaxError as e:
            raise AdminError(400, e.message) from None

    async def unpublish(request: Request) -> Response:
        name = _name(request)
        registry.unpublish(name, now())
        return JSONResponse({"model": name})

    async def get_model(request: Request) -> Response:
        return JSONResponse(listcell(registry.model(_name(request))))

    async def list_models(request: Request) -> Response:
        cell = request.query_params.get("cell", "").rstrip("/")
        if cell and not CELL_PATH.match(cell):
            raise AdminError(400, f"'cell' must be a Sax cell path /sax/<cell>, got {cell!r}")
        specs = registry.store.all()
        return JSONResponse([listcell(s) for s in specs
                             if not cell or s.model.startswith(cell + "/")])

    async def register(request: Request) -> Response:
        data = await _json(request, config.max_body_bytes)
        info = ServerInfo.from_json(data.get("server") if isinstance(data, dict) else None)
        registry.register(info, _reports(data), now())
        return JSONResponse({"heartbeat_interval": config.heartbeat_interval,
                             "assignments": [a.to_json() for a in registry.assigned(info.id)]})

    async def heartbeat(request: Request) -> Response:
        data = await _json(request, config.max_body_bytes)
        assigned = registry.heartbeat(request.path_params["server_id"], _reports(data), now())
        return JSONResponse({"assignments": [a.to_json() for a in assigned]})

    async def servers(request: Request) -> Response:
        return JSONResponse(registry.servers_json(now()))

    async def failed(request: Request) -> Response:
        """A gateway could not reach a replica: check the server now instead of waiting for its
        heartbeats to stop."""
        sid = request.path_params["server_id"]
        rec = registry.servers.get(sid)
        if rec is None:
            return JSONResponse({"server": sid, "alive": False})
        try:
            alive = (await probe.get(rec.info.address + "/health")).status_code == 200
        except httpx.HTTPError:
            alive = False
        if not alive:
            registry.mark_dead(sid, now())
        return JSONResponse({"server": sid, "alive": alive})

    async def routes(request: Request) -> Response:
        gateway = request.headers.get("x-llmcell-gateway")
        if gateway and gateway.startswith(("http://", "https://")) and len(gateway) < 256:
            gateways[gateway] = now()
        return JSONResponse(registry.routes().to_json())

    async def prometheus_targets(request: Request) -> Response:
        """Prometheus http_sd_configs: one job finds the admin, gateways and model servers."""
        horizon = now() - GATEWAY_TTL
        for url in [u for u, seen in gateways.items() if seen < horizon]:
            del gateways[url]
        return JSONResponse(scrape_targets(str(request.base_url), list(gateways),
                                           registry.servers_json(now())))

    async def prometheus(request: Request) -> Response:
        return metrics_response(generate_latest(metrics))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "servers": len(registry.servers),
                             "models": len(registry.store.all())})

    async def on_admin_error(request: Request, exc: AdminError) -> Response:
        return JSONResponse({"detail": exc.detail}, exc.status)

    async def on_wire_error(request: Request, exc: WireError) -> Response:
        return JSONResponse({"detail": str(exc)}, 400)

    async def on_not_found(request: Request, exc: NotFound) -> Response:
        what = exc.args[0]
        if str(what).startswith("/sax/"):
            return JSONResponse({"detail": f"model {what} is not published"}, 404)
        return JSONResponse({"detail": f"server {what} is not registered; register again"}, 404)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"detail": f"{request.method} {request.url.path}: {exc.detail}"},
                            exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @asynccontextmanager
    async def lifespan(app):
        async def upkeep():
            while True:
                await asyncio.sleep(config.heartbeat_interval / 2)
                registry.tick(now())

        task = asyncio.create_task(upkeep())
        try:
            yield
        finally:
            task.cancel()
            await probe.aclose()

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models", publish, methods=["POST"]),
        Route("/models", update, methods=["PUT"]),
        Route("/models/{model:path}", get_model, methods=["GET"]),
        Route("/models/{model:path}", unpublish, methods=["DELETE"]),
        Route("/cell/servers", register, methods=["POST"]),
        Route("/cell/servers", servers, methods=["GET"]),
        Route("/cell/servers/{server_id:path}/heartbeat", heartbeat, methods=["POST"]),
        Route("/cell/servers/{server_id:path}/failed", failed, methods=["POST"]),
        Route("/cell/routes", routes, methods=["GET"]),
        Route("/prometheus/targets", prometheus_targets, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ], lifespan=lifespan, exception_handlers={
        AdminError: on_admin_error, WireError: on_wire_error, NotFound: on_not_found,
        HTTPException: on_http_error, Exception: on_unexpected})
