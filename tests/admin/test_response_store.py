"""Stored Responses API answers on SQLite and on a real PostgreSQL: per tenant, expired after
the retention period, deleted once."""

from __future__ import annotations

import time

from llmcell.admin.database import Database
from llmcell.admin.response_store import ResponseStore


def test_put_get_delete_per_tenant_and_expiry(state, monkeypatch):
    db = Database.open(state.get("state_url") or state["state_path"])
    store = ResponseStore(db, retention=60)
    store.put("team-a", {"id": "resp_1", "output": []}, [{"role": "user", "content": "hi"}])
    assert store.get("team-a", "resp_1") == ({"id": "resp_1", "output": []},
                                             [{"role": "user", "content": "hi"}])
    assert store.get("team-b", "resp_1") is None
    assert not store.delete("team-b", "resp_1")
    store.put("team-a", {"id": "resp_2", "output": []}, [])
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert store.get("team-a", "resp_2") is None  # past the retention period
    store.put("team-a", {"id": "resp_3", "output": []}, [])  # purges the expired
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1
    assert store.delete("team-a", "resp_3") and not store.delete("team-a", "resp_3")
    db.close()
