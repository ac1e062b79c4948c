"""The admin's state database: SQLite (a file, the embedded default) or PostgreSQL
(`postgresql://...`, psycopg 3), behind one small interface, with versioned schema migrations
applied at start.

- **One dialect for the stores.** `?` placeholders (psycopg's `%s` is made from them), `ON
  CONFLICT` upserts, and the types that differ named as fields of the schema text: `{bigint}`,
  `{blob}`, `{real}`, `{serial}` (an auto-numbered primary key).
- **Durable writes.** Every statement commits when it returns (autocommit), so an acknowledged
  publish, key or batch result survives `kill -9`; `transaction()` groups statements.
- **Migrations.** Each store lists its schema as numbered steps (`Migration`); `migrate()`
  applies the steps a database lacks, records them in `schema_migrations`, and does so under a
  lock, so admins starting together on one PostgreSQL apply each step once. A SQLite file made
  before the table existed holds the first steps already (they are `IF NOT EXISTS`).
- **One admin per SQLite file.** The first holds an exclusive lock on `<file>.lock`; a second
  refuses with a message naming the file (several admins share a PostgreSQL database instead).
- **PostgreSQL going away** raises `StateUnavailable` (the admin answers 503) and the next call
  connects again; nothing acknowledged is lost, because nothing is acknowledged before commit.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

TYPES = {
    "sqlite": {"bigint": "INTEGER", "blob": "BLOB", "real": "REAL",
               "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"bigint": "BIGINT", "blob": "BYTEA", "real": "DOUBLE PRECISION",
                   "serial": "BIGSERIAL PRIMARY KEY"},
}
_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL, version INTEGER NOT NULL, applied {real} NOT NULL,
    PRIMARY KEY (component, version))"""
_PG_LOCK = 0x6C6C6D63  # the advisory lock migrations run under


class StateUnavailable(RuntimeError):
    """The state database cannot be reached now (the admin answers 503 and tries again)."""


class Fenced(RuntimeError):
    """This admin does not hold the leader's lease (any more): its writes are refused."""


_WRITES = ("INSERT", "UPDATE", "DELETE")
_FENCE = "SELECT 1 FROM leader WHERE id = 1 AND token = %s FOR SHARE"


@dataclass(frozen=True)
class Migration:
    version: int
    statements: tuple[str, ...]
    """SQL with `{bigint}`-style type fields; `IF NOT EXISTS` where a pre-migration file may
    hold the object already."""


def is_url(state: str | Path) -> bool:
    return str(state).startswith(("postgresql://", "postgres://"))


class Database:
    def __init__(self, dialect: str, connect: Callable[[], Any], where: str,
                 lock_file=None) -> None:
        self.dialect = dialect
        self.types = TYPES[dialect]
        self.where = where
        """What to call it in messages (a path, or the URL without its password)."""
        self._connect = connect
        self._conn = connect()
        self._lock_file = lock_file
        self._mutex = threading.RLock()
        self.fencing = False
        """Set by the leader election (PostgreSQL): every write then carries `token`."""
        self.token: int | None = None
        self._unfenced = 0

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, state: str | Path) -> "Database":
        """A SQLite file (made if missing, locked for this admin) or a PostgreSQL URL."""
        if is_url(state):
            return cls._postgresql(str(state))
        path = Path(state)
        if str(path) == ":memory:":
            return cls("sqlite", lambda: _sqlite(":memory:"), ":memory:")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{path}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ValueError(f"the state file {path} is in use by another admin ({holder}): a "
                             "SQLite store serves one admin; give admins that share state a "
                             "PostgreSQL URL (--state postgresql://...)") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        return cls("sqlite", lambda: _sqlite(str(path)), str(path), lock)

    @classmethod
    def _postgresql(cls, url: str) -> "Database":
        import psycopg

        shown = _without_password(url)

        def connect():
            try:
                return psycopg.connect(url, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as e:
                raise StateUnavailable(f"PostgreSQL at {shown} is unreachable: "
                                       f"{str(e).strip().splitlines()[0]}") from None

        return cls("postgresql", connect, shown)

    # ---- statements ------------------------------------------------------------------------
    def sql(self, text: str) -> str:
        """A store's statement in this database's dialect."""
        for name, kind in self.types.items():
            text = text.replace("{" + name + "}", kind)
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def execute(self, text: str, params: tuple | list = ()):
        """Run one statement; the driver's cursor (rowcount, fetchone, fetchall, iteration)."""
        with self._mutex:
            if self.dialect == "sqlite":
                return self._conn.execute(self.sql(text), params)
            if self.fencing and not self._unfenced and text.lstrip().upper().startswith(_WRITES):
                return self._pg(lambda conn: self._fenced(conn, self.sql(text), params))
            return self._pg(lambda conn: conn.execute(self.sql(text), params))

    def _fenced(self, conn, text: str, params):
        """The write and the leader's token checked in one transaction: the token's row is
        share-locked, so a takeover (which updates it) waits for this write or comes first and
        refuses it. A deposed leader that wakes up writes nothing."""
        if self.token is None:
            raise Fenced("this admin is not the leader")
        with conn.transaction():
            if conn.execute(_FENCE, (self.token,)).fetchone() is None:
                raise Fenced(f"this admin's lease (token {self.token}) was taken over")
            return conn.execute(text, params)

    def _pg(self, call):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        try:
            return call(self._conn)
        except psycopg.OperationalError as e:
            try:
                self._conn.close()
            finally:
                self._conn = None
            raise StateUnavailable(f"PostgreSQL at {self.where} went away: "
                                   f"{str(e).strip().splitlines()[0]}") from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements inside commit together, or not at all."""
        with self._mutex:
            if self.dialect == "sqlite":
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            else:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                with self._conn.transaction():
                    yield

    @contextmanager
    def unfenced(self) -> Iterator[None]:
        """Writes any admin may make, leader or not: migrations and what start-up ensures
        (idempotent, and the same from every admin)."""
        with self._mutex:
            self._unfenced += 1
            try:
                yield
            finally:
                self._unfenced -= 1

    # ---- migrations ------------------------------------------------------------------------
    def migrate(self, component: str, steps: list[Migration]) -> list[int]:
        """Apply the steps of `component` this database lacks, in order; the versions applied."""
        self.execute(_MIGRATIONS)
        applied = []
        with self.unfenced(), self.transaction():
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))
            have = {v for (v,) in self.execute(
                "SELECT version FROM schema_migrations WHERE component = ?", (component,))}
            for step in sorted(steps, key=lambda s: s.version):
                if step.version in have:
                    continue
                for statement in step.statements:
                    self.execute(statement)
                self.execute("INSERT INTO schema_migrations (component, version, applied) "
                             "VALUES (?, ?, ?)", (component, step.version, time.time()))
                applied.append(step.version)
        return applied

    def columns(self, table: str) -> set[str]:
        """The table's column names (a step that adds one to an older file checks first)."""
        if self.dialect == "sqlite":
            return {row[1] for row in self.execute(f"PRAGMA table_info({table})")}
        return {row[0] for row in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema()", (table,))}

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def _sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
