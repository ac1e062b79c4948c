"""Durable admin state: the published models, in the admin's database (admin/database.py:
SQLite or PostgreSQL). Every write commits before it returns, so an acknowledged
publish/update/unpublish survives `kill -9`.

Servers and their replicas are not stored: after a restart the servers re-register and report
what they hold, and the admin adopts it (see placement).
"""

from __future__ import annotations

import time
from pathlib import Path

from llmcell.admin.database import Database, Migration
from llmcell.admin.placement import ModelSpec

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY,
    model_path TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    memory_bytes {bigint} NOT NULL,
    updated {real} NOT NULL
)""",))]


class ModelStore:
    def __init__(self, state: Database | str | Path) -> None:
        """`state`: an open database, or what `Database.open` takes (a file or a URL)."""
        self.db = state if isinstance(state, Database) else Database.open(state)
        self.db.migrate("models", MIGRATIONS)

    def all(self) -> list[ModelSpec]:
        rows = self.db.execute("SELECT model, model_path, checkpoint, replicas, memory_bytes "
                               "FROM models ORDER BY model").fetchall()
        return [ModelSpec(*row) for row in rows]

    def get(self, model: str) -> ModelSpec | None:
        row = self.db.execute("SELECT model, model_path, checkpoint, replicas, memory_bytes "
                              "FROM models WHERE model = ?", (model,)).fetchone()
        return ModelSpec(*row) if row else None

    def put(self, spec: ModelSpec) -> None:
        self.db.execute(
            "INSERT INTO models (model, model_path, checkpoint, replicas, memory_bytes, updated) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET "
            "model_path = excluded.model_path, checkpoint = excluded.checkpoint, "
            "replicas = excluded.replicas, memory_bytes = excluded.memory_bytes, "
            "updated = excluded.updated",
            (spec.model, spec.model_path, spec.checkpoint, spec.replicas, spec.memory_bytes,
             time.time()))

    def delete(self, model: str) -> bool:
        return self.db.execute("DELETE FROM models WHERE model = ?", (model,)).rowcount > 0

    def close(self) -> None:
        self.db.close()
