"""Tenants and global quotas on the admin: set, list and delete a tenant's limits and weight
(the `admin` role), and the lease exchange where each gateway reports what it admitted and gets
its share of every budget (`/cell/leases`, members only; tenancy/leases.py decides)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.audit import Audit
from llmcell.admin.errors import AdminError, read_body
from llmcell.admin.keys import KeyStore
from llmcell.admin.tenants import TenantStore
from llmcell.config.admin import AdminConfig
from llmcell.protocol.cell import WireError
from llmcell.protocol.tenancy import Budget, TenantRecord, Usage, budgets_of, check_tenant
from llmcell.tenancy.leases import LeaseBook

MAX_USAGES = 100_000


def tenant_routes(config: AdminConfig, keys: KeyStore, tenants: TenantStore,
                  audit: Audit) -> list[Route]:
    book = LeaseBook(config.quota_window, config.lease_ttl)
    cached: list = [None, None]  # budgets by name, and the versions they were made at

    def budgets() -> dict[tuple[str, str], Budget]:
        version = (keys.version, tenants.version)
        if cached[1] != version:
            found = [b for r in keys.all() if not r.revoked for b in budgets_of(f"key:{r.id}", r)]
            found += [b for t in tenants.all() for b in budgets_of(f"tenant:{t.name}", t)]
            cached[:] = [{b.name: b for b in found}, version]
        return cached[0]

    async def put(request: Request) -> Response:
        name = request.path_params["tenant"]
        with audit.action(request, "tenants.set") as entry:
            entry["target"] = check_tenant(name)
            data = await read_body(request, config.max_body_bytes)
            if not isinstance(data, dict):
                raise WireError("the request body must be a JSON object")
            record = TenantRecord.from_json(dict(data, tenant=name))
            tenants.put(record)
        return JSONResponse(record.to_json())

    async def listing(request: Request) -> Response:
        return JSONResponse([t.to_json() for t in tenants.all()])

    async def delete(request: Request) -> Response:
        name = request.path_params["tenant"]
        with audit.action(request, "tenants.delete") as entry:
            entry["target"] = name
            if not tenants.delete(name):
                raise AdminError(404, f"no tenant {name} (a tenant without limits has no row)")
        return JSONResponse({"tenant": name, "deleted": True})

    async def leases(request: Request) -> Response:
        data = await read_body(request, config.max_body_bytes)
        gateway = data.get("gateway") if isinstance(data, dict) else None
        usages = data.get("usages") if isinstance(data, dict) else None
        if not isinstance(gateway, str) or not 0 < len(gateway) < 256:
            raise WireError("field 'gateway' must be the gateway's URL")
        if not isinstance(usages, list) or len(usages) > MAX_USAGES:
            raise WireError(f"field 'usages' must be a list of at most {MAX_USAGES}")
        reply = book.exchange(gateway, [Usage.from_json(u) for u in usages], budgets())
        return JSONResponse(reply.to_json())

    return [
        Route("/tenants", listing, methods=["GET"]),
        Route("/tenants/{tenant}", put, methods=["PUT"]),
        Route("/tenants/{tenant}", delete, methods=["DELETE"]),
        Route("/cell/leases", leases, methods=["POST"]),
    ]
