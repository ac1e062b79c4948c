"""Durable admin state: the published models, in the admin's database (admin/database.py:
SQLite or PostgreSQL). Every write commits before it returns, so an acknowledged
publish/update/unpublish survives `kill -9`.

Servers and their replicas are not stored: after a restart the servers re-register and report
what they hold, and the admin adopts it (see placement).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from llmcell.admin.database import Database, Migration
from llmcell.admin.placement import ModelSpec
from llmcell.protocol.autoscaling import ScalingPolicy

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY,
    model_path TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    memory_bytes {bigint} NOT NULL,
    updated {real} NOT NULL
)""",)), Migration(2, ("ALTER TABLE models ADD COLUMN scaling TEXT",)),
              Migration(3, ("ALTER TABLE models ADD COLUMN base TEXT",))]
_COLUMNS = "model, model_path, checkpoint, replicas, memory_bytes, scaling, base"


def _spec(row) -> ModelSpec:
    *fields, scaling, base = row
    return ModelSpec(*fields, ScalingPolicy.from_json(json.loads(scaling)) if scaling else None,
                     base or None)


class ModelStore:
    def __init__(self, state: Database | str | Path) -> None:
        """`state`: an open database, or what `Database.open` takes (a file or a URL)."""
        self.db = state if isinstance(state, Database) else Database.open(state)
        self.db.migrate("models", MIGRATIONS)

    def all(self) -> list[ModelSpec]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM models ORDER BY model").fetchall()
        return [_spec(row) for row in rows]

    def get(self, model: str) -> ModelSpec | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM models WHERE model = ?",
                              (model,)).fetchone()
        return _spec(row) if row else None

    def put(self, spec: ModelSpec) -> None:
        self.db.execute(
            f"INSERT INTO models ({_COLUMNS}, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET "
            "model_path = excluded.model_path, checkpoint = excluded.checkpoint, "
            "replicas = excluded.replicas, memory_bytes = excluded.memory_bytes, "
            "scaling = excluded.scaling, base = excluded.base, updated = excluded.updated",
            (spec.model, spec.model_path, spec.checkpoint, spec.replicas, spec.memory_bytes,
             json.dumps(spec.scaling.to_json()) if spec.scaling else None, spec.base,
             time.time()))

    def delete(self, model: str) -> bool:
        return self.db.execute("DELETE FROM models WHERE model = ?", (model,)).rowcount > 0

    def close(self) -> None:
        self.db.close()
