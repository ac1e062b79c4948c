"""API keys on the admin: create (the key is in this reply only), list (never a secret), revoke
and rotate, for the `admin` role; and the table that gateways follow (`/cell/keys`: hashes, the
hashing secret and the tenants' limits, for members of the cell only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.audit import Audit
from llmcell.admin.errors import AdminError, read_body
from llmcell.admin.keys import KeyStore
from llmcell.admin.tenants import TenantStore
from llmcell.config.admin import AdminConfig
from llmcell.protocol.auth import KeyRequest


def key_routes(config: AdminConfig, keys: KeyStore, tenants: TenantStore,
               audit: Audit) -> list[Route]:
    def require_auth() -> None:
        if not config.security.auth:
            raise AdminError(409, "API keys need the cell credential: start the cell with auth "
                                  "on (llmcell up --auth, or --cell-token-file on each member)")

    async def create(request: Request) -> Response:
        require_auth()
        with audit.action(request, "keys.create") as entry:
            req = KeyRequest.from_json(await read_body(request, config.max_body_bytes))
            key, record = keys.create(req)
            entry["target"] = record.id
        return JSONResponse(dict(record.public(), key=key))

    async def listing(request: Request) -> Response:
        return JSONResponse([r.public() for r in keys.all()])

    async def revoke(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        with audit.action(request, "keys.revoke") as entry:
            entry["target"] = key_id
            if keys.get(key_id) is None:
                raise AdminError(404, f"no key {key_id}")
            keys.revoke(key_id)
        return JSONResponse(keys.get(key_id).public())

    async def rotate(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        with audit.action(request, "keys.rotate") as entry:
            entry["target"] = key_id
            made = keys.rotate(key_id)
            if made is None:
                raise AdminError(404, f"no active key {key_id}")
            key, record = made
        return JSONResponse(dict(record.public(), key=key, replaces=key_id))

    async def table(request: Request) -> Response:
        return JSONResponse({"version": [keys.version, tenants.version],
                             "secret": keys.secret.hex(),
                             "keys": [r.to_json() for r in keys.all()],
                             "tenants": [t.to_json() for t in tenants.all()]})

    return [
        Route("/keys", create, methods=["POST"]),
        Route("/keys", listing, methods=["GET"]),
        Route("/keys/{key_id}", revoke, methods=["DELETE"]),
        Route("/keys/{key_id}/rotate", rotate, methods=["POST"]),
        Route("/cell/keys", table, methods=["GET"]),
    ]
