"""The cell's API keys, kept by the admin in its database: each key's tenant, role, models and
limits, and an HMAC-SHA256 of the key under a secret that the store keeps beside them (never the
key itself). Gateways follow the table (hashes and the secret, over the cell's credential) and
authenticate requests against it while the admin is away."""

from __future__ import annotations

import json
import secrets
import time

from llmcell.admin.database import Database, Migration
from llmcell.encryption import is_sealed, seal, unseal
from llmcell.protocol.auth import KeyRecord, KeyRequest, key_hash, new_key, new_key_id

MIGRATIONS = [Migration(1, ("""CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    models TEXT NOT NULL,
    rpm {bigint},
    tpm {bigint},
    created {real} NOT NULL,
    expires {real},
    revoked INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER,
    max_priority TEXT
)""", "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value {blob} NOT NULL)"))]
_COLUMNS = ("id, tenant, role, hash, models, rpm, tpm, concurrency, max_priority, created, "
            "expires, revoked")
_ADDED = {"concurrency": "INTEGER", "max_priority": "TEXT"}
"""Columns later than the first stores: added to a file from before migrations that lacks them."""


_LABEL = b"the admin's key-hash secret"


class KeyStore:
    def __init__(self, db: Database, master: bytes | None = None) -> None:
        """`master`: the admin's master key: the hashing secret is kept sealed under it (a
        store without it keeps the secret as it is, and one sealed needs it to open)."""
        self.db = db
        self.db.migrate("keys", MIGRATIONS)
        have = self.db.columns("keys")
        for column, kind in _ADDED.items():
            if column not in have:
                self.db.execute(f"ALTER TABLE keys ADD COLUMN {column} {kind}")
        select = "SELECT value FROM secrets WHERE name = 'key_hash'"
        row = self.db.execute(select).fetchone()
        if row is None:  # the first admin makes it; one starting at the same time reads it
            fresh = secrets.token_bytes(32)
            self.db.execute("INSERT INTO secrets (name, value) VALUES ('key_hash', ?) "
                            "ON CONFLICT(name) DO NOTHING",
                            (seal(master, fresh, _LABEL) if master is not None else fresh,))
            row = self.db.execute(select).fetchone()
        stored = bytes(row[0])
        if is_sealed(stored):
            if master is None:
                raise ValueError("the admin's store is sealed: give its master key "
                                 "(--master-key-file)")
            secret = unseal(master, stored, _LABEL)
        else:
            secret = stored
            if master is not None:  # sealed from now on
                self.db.execute("UPDATE secrets SET value = ? WHERE name = 'key_hash'",
                                (seal(master, secret, _LABEL),))
        self.secret = secret
        self.version = 0
        """Bumped on every change (gateways re-read the table when it moves)."""

    def create(self, req: KeyRequest, now: float | None = None) -> tuple[str, KeyRecord]:
        """A new key (returned once) and its record."""
        now = time.time() if now is None else now
        key = new_key()
        expires = None if req.expires_in is None else now + req.expires_in
        record = KeyRecord(new_key_id(), req.tenant, req.role, key_hash(self.secret, key),
                           req.models, req.rpm, req.tpm, req.concurrency, req.max_priority, now,
                           expires)
        self._insert(record)
        return key, record

    def ensure(self, key: str, tenant: str, role: str) -> KeyRecord:
        """A key given from outside (a bootstrap admin key from a Secret), stored if it is new."""
        digest = key_hash(self.secret, key)
        found = self.find(digest)
        if found is not None:
            return found
        record = KeyRecord(new_key_id(), tenant, role, digest, created=time.time())
        self._insert(record)
        return record

    def _insert(self, r: KeyRecord) -> None:
        self.db.execute(f"INSERT INTO keys ({_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                        (r.id, r.tenant, r.role, r.hash, json.dumps(list(r.models)), r.rpm, r.tpm,
                         r.concurrency, r.max_priority, r.created, r.expires, int(r.revoked)))
        self.version += 1

    def all(self) -> list[KeyRecord]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created, id").fetchall()
        return [_record(row) for row in rows]

    def get(self, key_id: str) -> KeyRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return _record(row) if row else None

    def find(self, digest: str) -> KeyRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM keys WHERE hash = ?", (digest,)).fetchone()
        return _record(row) if row else None

    def revoke(self, key_id: str) -> bool:
        changed = self.db.execute("UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0",
                                  (key_id,)).rowcount > 0
        self.version += changed
        return changed

    def rotate(self, key_id: str, now: float | None = None) -> tuple[str, KeyRecord] | None:
        """A new key with the old one's tenant, role, models, limits and remaining lifetime; the
        old one is revoked. None when there is no such active key."""
        old = self.get(key_id)
        now = time.time() if now is None else now
        if old is None or not old.active(now):
            return None
        left = None if old.expires is None else old.expires - now
        made = self.create(KeyRequest(old.tenant, old.role, old.models, old.rpm, old.tpm, left,
                                      old.concurrency, old.max_priority), now)
        self.revoke(key_id)
        return made


def _record(row) -> KeyRecord:
    *head, models, rpm, tpm, concurrency, max_priority, created, expires, revoked = row
    return KeyRecord(*head, tuple(json.loads(models)), rpm, tpm, concurrency, max_priority,
                     created, expires, bool(revoked))
