"""Which admin acts: leader election among admins that share a PostgreSQL database.

One row holds the lease: the holder (its advertised URL), a fencing token and when the lease
ends, by the database's clock (so the admins' clocks never decide). Every `interval` each admin
runs one statement: the holder extends its lease; anyone takes a lease that has run out, with
the token raised by one. The leader places replicas, runs batches and answers writes; standbys
answer reads of the database and point the rest at the leader. Every write the leader makes
carries its token (admin/database.py): a leader that was paused past its lease and wakes up
finds its token gone and writes nothing.

On SQLite there is one admin per file, and it always leads.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Callable

from llmcell.admin.database import Database, Migration, StateUnavailable

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    token {bigint} NOT NULL,
    expires {real} NOT NULL
)""",))]
_NOW = "extract(epoch from clock_timestamp())"
_CLAIM = f"""INSERT INTO leader (id, holder, token, expires) VALUES (1, ?, 1, {_NOW} + ?)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,
    token = CASE WHEN leader.holder = excluded.holder AND leader.token = ?
                 THEN leader.token ELSE leader.token + 1 END,
    expires = excluded.expires
WHERE (leader.holder = excluded.holder AND leader.token = ?) OR leader.expires < {_NOW}
RETURNING token"""


class Leadership:
    def __init__(self, db: Database, me: str, lease: float = 5.0) -> None:
        """`me`: the URL other members reach this admin at; `lease`: seconds a lease lasts
        without renewal (a standby takes over at most this long after the leader stops)."""
        if lease <= 0:
            raise ValueError(f"lease={lease} must be > 0 seconds")
        self.db = db
        self.me = me
        self.lease = lease
        self.elected = db.dialect == "postgresql"
        self.leader: str | None = None if self.elected else me
        """The leader's URL, as last read (None: not known)."""
        if self.elected:
            db.migrate("leader", MIGRATIONS)
            db.fencing = True
            self.step()  # an admin that can lead does so from the start

    @property
    def is_leader(self) -> bool:
        return self.leader == self.me and (not self.elected or self.db.token is not None)

    def step(self) -> bool:
        """One round: keep or take the lease if possible. True when this admin leads now."""
        if not self.elected:
            return True
        try:
            with self.db.unfenced():  # the lease itself is how leading is decided
                row = self.db.execute(_CLAIM, (self.me, self.lease, self.db.token or 0,
                                               self.db.token or 0)).fetchone()
            if row is not None:
                self.db.token, self.leader = int(row[0]), self.me
                return True
            self.db.token = None
            found = self.db.execute("SELECT holder FROM leader WHERE id = 1").fetchone()
            self.leader = found[0] if found else None
        except StateUnavailable:
            self.db.token, self.leader = None, None  # no database: nobody can be sure to lead
        return False

    async def run(self, on_change: Callable[[bool], None]) -> None:
        """Every third of the lease, a round; `on_change(leads)` when this admin's role moves."""
        leading = False
        while True:
            now = await asyncio.to_thread(self.step)
            if now != leading:
                leading = now
                print(f"llmcell admin: {'leading' if now else 'standing by'} "
                      f"(token {self.db.token}, leader {self.leader})", file=sys.stderr,
                      flush=True)
                on_change(now)
            await asyncio.sleep(self.lease / 3)
