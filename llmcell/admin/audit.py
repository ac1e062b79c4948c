"""The admin's audit trail: one JSON line per admin action (publish, update, unpublish, keys),
with who did it (tenant and key id, never a key), what, and how it ended; in a file beside the
admin and in the state database's `audit` table, so that admins sharing a PostgreSQL keep one
trail across a failover. A gateway that forwards
a caller's action names the caller in `X-Llmcell-Tenant` / `X-Llmcell-Key-Id`, which the admin
believes only from a member of the cell."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from starlette.requests import Request

from llmcell.admin.database import Database, Migration
from llmcell.edge.auth import principal_of

CALLER_HEADERS = ("x-llmcell-tenant", "x-llmcell-key-id")
MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS audit (
    seq {serial},
    at {real} NOT NULL,
    entry TEXT NOT NULL
)""",))]


def caller(request: Request) -> tuple[str, str | None]:
    """(tenant, key id) of whoever asked: the key's own, or, for a cell member forwarding a
    caller's request, the caller it names; ("anonymous", None) where auth is off."""
    p = principal_of(request)
    if p is None:
        return "anonymous", None
    if p.cell:
        tenant, key_id = (request.headers.get(h) for h in CALLER_HEADERS)
        return tenant or "cell", key_id
    return p.tenant, p.key_id


class Audit:
    def __init__(self, path: Path, db: Database | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = db
        if db is not None:
            db.migrate("audit", MIGRATIONS)

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self._lock, self.path.open("a") as f:
            f.write(line + "\n")
        if self.db is not None:
            with self.db.unfenced():  # a record of what happened, refusals by a deposed leader too
                self.db.execute("INSERT INTO audit (at, entry) VALUES (?, ?)",
                                (entry["time"], line))

    @contextmanager
    def action(self, request: Request, action: str) -> Iterator[dict]:
        """Audit what the block does: put the target in the yielded dict; an exception is
        recorded as the outcome (and raised on)."""
        tenant, key_id = caller(request)
        entry = {"time": time.time(), "action": action, "tenant": tenant, "key_id": key_id,
                 "target": None}
        try:
            yield entry
        except Exception as e:
            entry["outcome"] = f"refused: {getattr(e, 'status', 500)} {e}"[:300]
            self.write(entry)
            raise
        entry["outcome"] = "ok"
        self.write(entry)
