"""The cell's internal routes on the admin: model servers register and heartbeat (and learn what
to hold), gateways read the routing view and report replicas that failed them, and Prometheus
discovers every member to scrape."""

from __future__ import annotations

import time

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.errors import read_body
from llmcell.admin.registry import CellRegistry
from llmcell.config.admin import AdminConfig
from llmcell.metrics.admin import scrape_targets
from llmcell.protocol.cell import ReplicaReport, ServerInfo, WireError

GATEWAY_TTL = 30.0
"""Seconds a gateway stays a scrape target after it last read the routing view."""


def _reports(data) -> tuple[ReplicaReport, ...]:
    items = data.get("replicas", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise WireError("field 'replicas' must be a list")
    return tuple(ReplicaReport.from_json(r) for r in items)


def cell_routes(config: AdminConfig, registry: CellRegistry, probe: httpx.AsyncClient,
                now=time.monotonic) -> list[Route]:
    """`probe`: the client that checks a server a gateway reported (its /health); `now`: the
    clock (tests drive it)."""
    gateways: dict[str, float] = {}
    """Gateways that read the routing view lately (URL -> when), for service discovery."""

    async def register(request: Request) -> Response:
        data = await read_body(request, config.max_body_bytes)
        info = ServerInfo.from_json(data.get("server") if isinstance(data, dict) else None)
        registry.register(info, _reports(data), now())
        return JSONResponse({"heartbeat_interval": config.heartbeat_interval,
                             "assignments": [a.to_json() for a in registry.assigned(info.id)]})

    async def heartbeat(request: Request) -> Response:
        data = await read_body(request, config.max_body_bytes)
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
        except httpx.TimeoutException:  # busy, not gone: a server that still heartbeats lives
            alive = registry.heard_from(sid, now())
        except httpx.HTTPError:  # refused, reset: the process is gone
            alive = False
        if not alive:
            registry.mark_dead(sid, now())
        return JSONResponse({"server": sid, "alive": alive})

    async def routes(request: Request) -> Response:
        gateway = request.headers.get("x-llmcell-gateway")
        if gateway and gateway.startswith(("http://", "https://")) and len(gateway) < 256:
            gateways[gateway] = now()
        view = registry.routes(now())
        if not any(view.models.values()) and now() < registry.grace_until \
                and registry.store.all():
            # just started or took over with models published: the servers are re-registering;
            # a gateway keeps the view it has rather than routing to nobody
            return JSONResponse({"detail": "the admin's servers are re-registering"}, 503,
                                headers={"Retry-After": "1"})
        return JSONResponse(view.to_json())

    async def wake(request: Request) -> Response:
        """A gateway holds requests for a model: waiting for its first replica (scaled to zero)
        or for a slot (its replicas are full); the autoscaler counts them as waiting."""
        data = await read_body(request, config.max_body_bytes)
        model, held = (data.get("model"), data.get("held")) if isinstance(data, dict) else (0, 0)
        if not isinstance(model, str) or isinstance(held, bool) or not isinstance(held, int) \
                or held < 0:
            raise WireError("the body must be {model: <a published model>, held: <requests>}")
        gateway = request.headers.get("x-llmcell-gateway", "") or "unnamed"
        registry.wake(model, gateway[:256], held, now())
        spec = registry.model(model)
        return JSONResponse({"model": model, "desired_replicas": spec.replicas})

    async def leaving(request: Request) -> Response:
        """A server is shutting down (SIGTERM, preemption): its replicas go elsewhere now."""
        registry.leave(request.path_params["server_id"], now())
        return JSONResponse({"server": request.path_params["server_id"], "leaving": True})

    async def prometheus_targets(request: Request) -> Response:
        """Prometheus http_sd_configs: one job finds the admin, gateways and model servers."""
        horizon = now() - GATEWAY_TTL
        for url in [u for u, seen in gateways.items() if seen < horizon]:
            del gateways[url]
        return JSONResponse(scrape_targets(str(request.base_url), list(gateways),
                                           registry.servers_json(now())))

    return [
        Route("/cell/servers", register, methods=["POST"]),
        Route("/cell/servers", servers, methods=["GET"]),
        Route("/cell/servers/{server_id:path}/heartbeat", heartbeat, methods=["POST"]),
        Route("/cell/servers/{server_id:path}/failed", failed, methods=["POST"]),
        Route("/cell/servers/{server_id:path}/leaving", leaving, methods=["POST"]),
        Route("/cell/wake", wake, methods=["POST"]),
        Route("/cell/routes", routes, methods=["GET"]),
        Route("/prometheus/targets", prometheus_targets, methods=["GET"]),
    ]
