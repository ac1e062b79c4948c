"""The gateway's view of the cell: which replicas serve each model, followed from the admin.

The view is re-read every `view_interval` (so it follows the admin within ~1 s) and kept as it was
while the admin is unreachable, so the gateway goes on serving. On top of it the gateway keeps
its own counts of outstanding requests per replica and a short cool-down for replicas that just
failed, which the routing snapshot reflects.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx

from llmcell.config.gateway import GatewayConfig
from llmcell.edge.auth import KeyTable
from llmcell.protocol.auth import KeyRecord
from llmcell.protocol.cell import Replica, RouteView
from llmcell.protocol.errors import APIError
from llmcell.protocol.tenancy import TenantRecord


class CellView:
    def __init__(self, config: GatewayConfig, client: httpx.AsyncClient,
                 advertise: bool = True) -> None:
        """`advertise`: tell the admin this gateway's URL (its Prometheus discovery lists it)."""
        self.config = config
        self.client = client
        self.headers = {"X-Llmcell-Gateway": config.advertised} if advertise else {}
        self.view = RouteView()
        self.updated = 0.0
        self.admin_ok = False
        self.outstanding: dict[str, int] = {}
        self.cooldown: dict[str, float] = {}
        self.keys: KeyTable | None = None
        """The admin's API keys (hashes), followed with the routes when auth is on."""
        self.tenants: dict[str, TenantRecord] = {}
        """Tenants' own limits and weights, followed with the keys."""

    async def refresh(self) -> None:
        """Routes, then keys; each kept as it was when the admin does not answer for it (a new
        leader answers keys at once but routes only once its servers re-registered)."""
        ok = True
        try:
            r = await self.client.get("/cell/routes", headers=self.headers)
            r.raise_for_status()
            self.view = RouteView.from_json(r.json())
            self.updated = time.monotonic()
        except (httpx.HTTPError, ValueError):
            ok = False  # keep serving from the last view
        if self.config.security.auth:
            try:
                await self._refresh_keys()
            except (httpx.HTTPError, ValueError):
                ok = False  # keep authenticating with the last table
        self.admin_ok = ok

    async def _refresh_keys(self) -> None:
        r = await self.client.get("/cell/keys")
        r.raise_for_status()
        data = r.json()
        self.keys = KeyTable.of(bytes.fromhex(data["secret"]),
                                [KeyRecord.from_json(k) for k in data["keys"]])
        tenants = [TenantRecord.from_json(t) for t in data.get("tenants", [])]
        self.tenants = {t.name: t for t in tenants}

    async def follow(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.view_interval)

    def resolve(self, name: str) -> str:
        """A Sax path, or the last component of one, to the published Sax path."""
        if name in self.view.models:
            return name
        if "/" + name in self.view.models:  # /v1/models/sax/...: the path without its slash
            return "/" + name
        matches = [m for m in self.view.models if m.rsplit("/", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise APIError(400, f"model {name!r} is ambiguous: it names {sorted(matches)}; "
                                "use the full Sax path", param="model")
        served = sorted(self.view.models)
        raise APIError(404, f"the model {name!r} does not exist; published models: "
                            f"{', '.join(served) or 'none'}", param="model",
                       code="model_not_found")

    def snapshot(self, model: str, exclude: set[str]) -> list[Replica]:
        """Replicas to choose from: not yet tried, and not cooling down unless nothing else is."""
        now = time.monotonic()
        replicas = [replace(r, outstanding=self.outstanding.get(r.server_id, 0))
                    for r in self.view.models.get(model, []) if r.server_id not in exclude]
        warm = [r for r in replicas if self.cooldown.get(r.server_id, 0.0) <= now]
        return warm or replicas

    def failed(self, server_id: str) -> None:
        self.cooldown[server_id] = time.monotonic() + self.config.cooldown

    def begin(self, server_id: str) -> None:
        self.outstanding[server_id] = self.outstanding.get(server_id, 0) + 1

    def end(self, server_id: str) -> None:
        self.outstanding[server_id] = max(0, self.outstanding.get(server_id, 1) - 1)
