"""The cell's tenants, kept by the admin in its database beside the keys: each tenant's own
limits (shared by all of its keys) and its weight in fair queuing. A tenant with no row has no
limits of its own and weight 1."""

from __future__ import annotations

from llmcell.admin.database import Database, Migration
from llmcell.protocol.tenancy import TenantRecord

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    rpm {bigint},
    tpm {bigint},
    concurrency INTEGER,
    weight {real} NOT NULL DEFAULT 1.0
)""",))]


class TenantStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.db.migrate("tenants", MIGRATIONS)
        self.version = 0
        """Bumped on every change (with the keys', it tells gateways to re-read)."""

    def put(self, t: TenantRecord) -> None:
        self.db.execute("INSERT INTO tenants (name, rpm, tpm, concurrency, weight) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                        "rpm = excluded.rpm, tpm = excluded.tpm, "
                        "concurrency = excluded.concurrency, weight = excluded.weight",
                        (t.name, t.rpm, t.tpm, t.concurrency, t.weight))
        self.version += 1

    def delete(self, name: str) -> bool:
        gone = self.db.execute("DELETE FROM tenants WHERE name = ?", (name,)).rowcount > 0
        self.version += gone
        return gone

    def all(self) -> list[TenantRecord]:
        rows = self.db.execute("SELECT name, rpm, tpm, concurrency, weight FROM tenants "
                               "ORDER BY name").fetchall()
        return [TenantRecord(*row) for row in rows]
