"""What an admin that does not lead answers (admins sharing a PostgreSQL elect one leader,
admin/leadership.py): its probes and metrics, and reads that come straight from the shared
database (keys, tenants, files, batches); everything else, the cell's live state (servers,
routes, heartbeats, leases) and every write, gets 503 with `X-Llmcell-Leader` naming the leader,
which members follow by themselves (edge/admin_client.py)."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from llmcell.admin.leadership import Leadership
from llmcell.edge.admin_client import LEADER_HEADER

OPEN = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
READS = ("/keys", "/tenants", "/v1/files", "/v1/batches")


def not_leading(leadership: Leadership) -> JSONResponse:
    leader = leadership.leader if leadership.leader != leadership.me else None
    headers = {"Retry-After": "1", **({LEADER_HEADER: leader} if leader else {})}
    return JSONResponse({"detail": "this admin is a standby; the leader is "
                                   f"{leader or 'not known yet'}"}, 503, headers=headers)


class StandbyGuard:
    def __init__(self, app: ASGIApp, leadership: Leadership) -> None:
        self.app = app
        self.leadership = leadership

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.leadership.is_leader:
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if (method, path) in OPEN or (method == "GET" and path.startswith(READS)):
            return await self.app(scope, receive, send)
        await not_leading(self.leadership)(scope, receive, send)
