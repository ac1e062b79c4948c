"""Model management on the admin (what the gateway's Saxml publish, update, unpublish and
listcell calls forward to): a published model's spec is sized from its source's header, stored,
and placed on servers by the registry."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.adapters import adapter_spec
from llmcell.admin.audit import Audit
from llmcell.admin.errors import AdminError, read_body
from llmcell.admin.placement import ModelSpec
from llmcell.admin.registry import CellRegistry
from llmcell.admin.sizing import replica_size, under_roots
from llmcell.config.admin import AdminConfig
from llmcell.encryption import read_key
from llmcell.protocol.saxml import CELL_PATH, SaxError, model_name, parse_publish


def model_routes(config: AdminConfig, registry: CellRegistry, audit: Audit) -> list[Route]:
    now = time.monotonic
    model_key = read_key(config.master_key_file) if config.master_key_file else None

    def listcell(spec: ModelSpec) -> dict:
        out = {"model": spec.model, "model_path": spec.model_path,
               "checkpoint": spec.checkpoint, "max_replicas": spec.replicas,
               "active_replicas": registry.active_replicas(spec.model)}
        if spec.base is not None:
            out["base"] = spec.base
        adapters = registry.adapters_of(spec.model)
        if adapters:
            out["adapters"] = adapters
        if spec.scaling is not None:
            placeable = sum(1 for rec in registry.servers.values()
                            if rec.info.can_load(spec.model_path) and not rec.leaving
                            and rec.info.memory_bytes >= spec.memory_bytes)
            last = registry.scaling.last.get(spec.model)
            out["autoscaling"] = dict(spec.scaling.to_json(), desired_replicas=spec.replicas,
                                      reason=last.reason if last else None,
                                      placeable_replicas=placeable,
                                      capped=spec.scaling.max_replicas > placeable)
        return out

    async def sized(request: Request) -> ModelSpec:
        try:
            req = parse_publish(await read_body(request, config.max_body_bytes), "v2")
        except SaxError as e:
            raise AdminError(e.status, e.message) from None
        if req.base is not None:
            if not under_roots(req.model_path, config.model_roots):
                raise AdminError(400, f"adapter {req.model}: model_path {req.model_path!r} is "
                                      "not under a model root (the admin's --model-root folders)")
            return await adapter_spec(req, registry, config.bytes_per_param)
        external = (registry.external_memory(req.model_path) if req.checkpoint == "None"
                    else None)
        for field, value in (("model_path", req.model_path), ("checkpoint", req.checkpoint)):
            if value == "None" or under_roots(value, config.model_roots):
                continue
            if field == "model_path" and external is not None:  # a name an external engine serves
                return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas, external,
                                 req.scaling)
            raise AdminError(400, f"model {req.model}: {field} {value!r} is not under a model root "
                                  "(the admin's --model-root folders) nor a built-in alias"
                                  + (", and no joined server's external engine serves it under "
                                     "that name" if field == "model_path" else ""))
        try:
            size = await asyncio.to_thread(replica_size, req.model_path, req.checkpoint,
                                           config.bytes_per_param, config.kv_reserve_bytes,
                                           model_key)
        except (ValueError, OSError) as e:
            if external is None:
                raise AdminError(400, f"model {req.model}: cannot load its source: {e}; nor does "
                                      "a joined server's external engine serve it under that "
                                      "name") from None
            return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas, external,
                             req.scaling)
        return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas,
                         size.memory_bytes, req.scaling)

    def published(spec: ModelSpec) -> Response:
        registry.publish(spec, now())
        return JSONResponse(dict(listcell(spec), replicas=spec.replicas,
                                 memory_bytes=spec.memory_bytes))

    async def publish(request: Request) -> Response:
        with audit.action(request, "publish") as entry:
            spec = await sized(request)
            entry["target"] = spec.model
            if registry.store.get(spec.model) is not None:
                raise AdminError(409, f"model {spec.model} is already published; use update")
            return published(spec)

    async def update(request: Request) -> Response:
        with audit.action(request, "update") as entry:
            spec = await sized(request)
            entry["target"] = spec.model
            registry.model(spec.model)  # 404 when not published
            return published(spec)

    def name(request: Request) -> str:
        try:
            return model_name("/" + request.path_params["model"].lstrip("/"))
        except SaxError as e:
            raise AdminError(400, e.message) from None

    async def unpublish(request: Request) -> Response:
        with audit.action(request, "unpublish") as entry:
            entry["target"] = model = name(request)
            registry.unpublish(model, now())
        return JSONResponse({"model": model})

    async def get_model(request: Request) -> Response:
        return JSONResponse(listcell(registry.model(name(request))))

    async def list_models(request: Request) -> Response:
        cell = request.query_params.get("cell", "").rstrip("/")
        if cell and not CELL_PATH.match(cell):
            raise AdminError(400, f"'cell' must be a Sax cell path /sax/<cell>, got {cell!r}")
        return JSONResponse([listcell(s) for s in registry.store.all()
                             if not cell or s.model.startswith(cell + "/")])

    async def scale_events(request: Request) -> Response:
        """The autoscaler's recent decisions that changed a count, oldest first."""
        model = request.query_params.get("model")
        return JSONResponse([e for e in registry.scaling.events
                             if model is None or e["model"] == model])

    return [
        Route("/autoscaler/events", scale_events, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models", publish, methods=["POST"]),
        Route("/models", update, methods=["PUT"]),
        Route("/models/{model:path}", get_model, methods=["GET"]),
        Route("/models/{model:path}", unpublish, methods=["DELETE"]),
    ]
