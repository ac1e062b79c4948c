"""Batch state in the admin's database (admin/database.py: SQLite or PostgreSQL): files' metadata (their bytes are blobs), batches,
and each answered line of a batch.

Exactly once: a line's result is one row keyed by (batch, line), committed before it counts.
A runner that restarts skips the lines that have a row, and a line answered twice (sent again
after a crash, before its first answer was committed) keeps its first row. The output and
error files are written from these rows, in input order, so each `custom_id` is in them once,
and the request counts are counted from the same rows.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Iterator

from llmcell.admin.database import Database, Migration
from llmcell.protocol.batch import ACTIVE, BatchObject, FileObject

MIGRATIONS = [Migration(1, (
    """CREATE TABLE IF NOT EXISTS files (
    seq {serial},
    id TEXT UNIQUE NOT NULL,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes {bigint} NOT NULL,
    lines INTEGER NOT NULL,
    created_at {bigint} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS batches (
    seq {serial},
    id TEXT UNIQUE NOT NULL,
    tenant TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at {bigint} NOT NULL,
    expires_at {bigint} NOT NULL,
    metadata TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    times TEXT NOT NULL DEFAULT '{}'
)""",
    """CREATE TABLE IF NOT EXISTS batch_results (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    custom_id TEXT,
    ok INTEGER NOT NULL,
    record TEXT NOT NULL,
    tokens {bigint} NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line)
)""",
))]
_FILE = "id, tenant, filename, purpose, bytes, created_at, lines"
_BATCH = ("id, tenant, input_file_id, endpoint, completion_window, status, created_at, "
          "expires_at, metadata, total, output_file_id, error_file_id, errors, times")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.db.migrate("batch", MIGRATIONS)

    # ---- files ---------------------------------------------------------------------------------
    def add_file(self, f: FileObject) -> None:
        self.db.execute(f"INSERT INTO files ({_FILE}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, "
                        "filename = excluded.filename, purpose = excluded.purpose, "
                        "bytes = excluded.bytes, created_at = excluded.created_at, "
                        "lines = excluded.lines",
                        (f.id, f.tenant, f.filename, f.purpose, f.bytes, f.created_at, f.lines))

    def file(self, file_id: str) -> FileObject | None:
        row = self.db.execute(f"SELECT {_FILE} FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileObject(*row) if row else None

    def files(self, tenant: str | None, purpose: str | None, after: str | None, limit: int,
              newest_first: bool = True) -> tuple[list[FileObject], bool]:
        rows = self._page("files", _FILE, tenant, after, limit, newest_first,
                          ("purpose = ?", purpose) if purpose else None)
        return [FileObject(*r) for r in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> None:
        self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    # ---- batches -------------------------------------------------------------------------------
    def add_batch(self, b: BatchObject) -> None:
        self.db.execute(f"INSERT INTO batches ({_BATCH}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._row(b))

    def save(self, b: BatchObject) -> None:
        """Write a batch's status, files, errors and times (one statement: all or none)."""
        self.db.execute("UPDATE batches SET status = ?, total = ?, output_file_id = ?, "
                        "error_file_id = ?, errors = ?, times = ? WHERE id = ?",
                        (b.status, b.total, b.output_file_id, b.error_file_id,
                         json.dumps(b.errors) if b.errors else None, json.dumps(b.times), b.id))

    def move(self, b: BatchObject, status: str, now: float | None = None) -> None:
        b.status = status
        b.times.setdefault(f"{status}_at", int(now if now is not None else time.time()))
        self.save(b)

    def batch(self, batch_id: str) -> BatchObject | None:
        row = self.db.execute(f"SELECT {_BATCH} FROM batches WHERE id = ?",
                              (batch_id,)).fetchone()
        return self._counted(self._batch(row)) if row else None

    def batches(self, tenant: str | None, after: str | None, limit: int
                ) -> tuple[list[BatchObject], bool]:
        rows = self._page("batches", _BATCH, tenant, after, limit, True, None)
        return [self._counted(self._batch(r)) for r in rows[:limit]], len(rows) > limit

    def active(self) -> list[BatchObject]:
        """Batches the runner has work on, oldest first."""
        marks = ", ".join("?" for _ in ACTIVE)
        rows = self.db.execute(f"SELECT {_BATCH} FROM batches WHERE status IN ({marks}) "
                               "ORDER BY seq", ACTIVE).fetchall()
        return [self._counted(self._batch(r)) for r in rows]

    def counts_by_status(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, count(*) FROM batches GROUP BY status"))

    # ---- results -------------------------------------------------------------------------------
    def add_result(self, batch_id: str, line: int, custom_id: str | None, ok: bool,
                   record: dict, tokens: int = 0) -> bool:
        """Commit a line's result; False when the line already had one (it stays)."""
        cur = self.db.execute("INSERT INTO batch_results "
                              "(batch_id, line, custom_id, ok, record, tokens) "
                              "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (batch_id, line, custom_id, int(ok), json.dumps(record), tokens))
        return cur.rowcount > 0

    def done_lines(self, batch_id: str) -> set[int]:
        return {r[0] for r in self.db.execute(
            "SELECT line FROM batch_results WHERE batch_id = ?", (batch_id,))}

    def results(self, batch_id: str, ok: bool) -> Iterator[str]:
        """The records, as JSON lines in input order."""
        for (record,) in self.db.execute("SELECT record FROM batch_results WHERE batch_id = ? "
                                         "AND ok = ? ORDER BY line", (batch_id, int(ok))):
            yield record

    def tokens(self, batch_id: str) -> int:
        return self.db.execute("SELECT coalesce(sum(tokens), 0) FROM batch_results "
                               "WHERE batch_id = ?", (batch_id,)).fetchone()[0]

    def totals(self) -> dict[str, int]:
        """Every batch's answered lines and tokens (the metrics' counters)."""
        out = {"completed": 0, "failed": 0, "tokens": 0}
        for ok, n, tokens in self.db.execute("SELECT ok, count(*), coalesce(sum(tokens), 0) "
                                             "FROM batch_results GROUP BY ok"):
            out["completed" if ok else "failed"] += n
            out["tokens"] += tokens
        return out

    # ---- rows ----------------------------------------------------------------------------------
    def _page(self, table: str, columns: str, tenant: str | None, after: str | None, limit: int,
              newest_first: bool, extra: tuple[str, str] | None) -> list[tuple]:
        where, args = [], []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if extra is not None:
            where.append(extra[0])
            args.append(extra[1])
        if after is not None:
            where.append(f"seq {'<' if newest_first else '>'} "
                         f"coalesce((SELECT seq FROM {table} WHERE id = ?), "
                         f"{'-1' if newest_first else '1e18'})")
            args.append(after)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"
        return self.db.execute(f"SELECT {columns} FROM {table} {clause} ORDER BY seq {order} "
                               "LIMIT ?", (*args, limit + 1)).fetchall()

    def _counted(self, b: BatchObject) -> BatchObject:
        counts = dict(self.db.execute("SELECT ok, count(*) FROM batch_results "
                                      "WHERE batch_id = ? GROUP BY ok", (b.id,)))
        b.completed, b.failed = counts.get(1, 0), counts.get(0, 0)
        return b

    @staticmethod
    def _row(b: BatchObject) -> tuple:
        return (b.id, b.tenant, b.input_file_id, b.endpoint, b.completion_window, b.status,
                b.created_at, b.expires_at, json.dumps(b.metadata) if b.metadata else None,
                b.total, b.output_file_id, b.error_file_id,
                json.dumps(b.errors) if b.errors else None, json.dumps(b.times))

    @staticmethod
    def _batch(row: tuple) -> BatchObject:
        (id_, tenant, file_id, endpoint, window, status, created, expires, metadata, total,
         output, error, errors, times) = row
        return BatchObject(id_, tenant, file_id, endpoint, window, status, created, expires,
                           json.loads(metadata) if metadata else None, total, 0, 0, output,
                           error, json.loads(errors) if errors else None, json.loads(times))
