"""Stored Responses API answers in the admin's database (SQLite or PostgreSQL): each response
object with the conversation that led to it, per tenant, kept for the retention period. The
gateways write and read them with the cell credential (`/cell/responses/...`), naming the
caller's tenant: another tenant's response, or an expired one, is not found."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.admin.database import Database, Migration
from llmcell.edge.errors import read_openai_json
from llmcell.protocol.errors import APIError

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at {bigint} NOT NULL,
    expires_at {bigint} NOT NULL,
    response TEXT NOT NULL,
    messages TEXT NOT NULL
)""", "CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at)"))]


class ResponseStore:
    def __init__(self, db: Database, retention: float) -> None:
        self.db = db
        self.retention = retention
        self.db.migrate("responses", MIGRATIONS)

    def put(self, tenant: str, response: dict, messages: list) -> None:
        now = int(time.time())
        with self.db.transaction():
            self.db.execute("DELETE FROM responses WHERE expires_at < ?", (now,))
            self.db.execute(
                "INSERT INTO responses (id, tenant, created_at, expires_at, response, messages) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (response["id"], tenant, now, now + int(self.retention),
                 json.dumps(response), json.dumps(messages)))

    def get(self, tenant: str, rid: str) -> tuple[dict, list] | None:
        row = self.db.execute("SELECT response, messages FROM responses WHERE id = ? AND "
                              "tenant = ? AND expires_at >= ?",
                              (rid, tenant, int(time.time()))).fetchone()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    def delete(self, tenant: str, rid: str) -> bool:
        return self.db.execute("DELETE FROM responses WHERE id = ? AND tenant = ?",
                               (rid, tenant)).rowcount > 0


def response_routes(store: ResponseStore, max_body: int) -> list[Route]:
    def where(request: Request) -> tuple[str, str]:
        tenant = request.query_params.get("tenant", "")
        if not tenant:
            raise APIError(400, "'tenant' is required", param="tenant")
        return tenant, request.path_params["rid"]

    def missing(rid: str) -> APIError:
        return APIError(404, f"no response with id '{rid}' (it may have expired)",
                        param="response_id", code="not_found")

    async def put(request: Request) -> Response:
        tenant, rid = where(request)
        body = await read_openai_json(request, max_body)
        response, messages = body.get("response"), body.get("messages")
        if not isinstance(response, dict) or response.get("id") != rid \
                or not isinstance(messages, list):
            raise APIError(400, "the body must be {response: {id: <the path's id>, ...}, "
                                "messages: [...]}")
        store.put(tenant, response, messages)
        return Response(status_code=204)

    async def get(request: Request) -> Response:
        tenant, rid = where(request)
        found = store.get(tenant, rid)
        if found is None:
            raise missing(rid)
        return JSONResponse({"response": found[0], "messages": found[1]})

    async def delete(request: Request) -> Response:
        tenant, rid = where(request)
        if not store.delete(tenant, rid):
            raise missing(rid)
        return Response(status_code=204)

    return [Route("/cell/responses/{rid}", put, methods=["PUT"]),
            Route("/cell/responses/{rid}", get, methods=["GET"]),
            Route("/cell/responses/{rid}", delete, methods=["DELETE"])]
