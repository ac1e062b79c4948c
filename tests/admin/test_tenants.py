"""Tenants and the lease exchange on the admin, in process: limits set, listed, replaced and
deleted by an admin; the exchange for members only, its bad input refused naming the field; a
key's limits leased from its first report; a store made before these columns gains them."""

from __future__ import annotations

import sqlite3
import time

import pytest
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.database import Database
from llmcell.admin.keys import KeyStore
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.config.security import CellSecurity
from llmcell.protocol.auth import KeyRequest

TOKEN = "u" * 43
CELL = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def admin(tmp_path, state):
    config = AdminConfig(**state, security=CellSecurity(TOKEN), quota_window=30.0)
    store = ModelStore(config.state)
    yield TestClient(create_admin_app(config, CellRegistry(store, config.dead_after,
                                                           time.monotonic())), headers=CELL)
    store.close()


def test_tenants_are_set_listed_replaced_and_deleted(admin):
    assert admin.put("/tenants/team-a", json={"rpm": 10, "weight": 3}).status_code == 200
    assert admin.put("/tenants/team-a", json={"tpm": 500}).json() == {
        "tenant": "team-a", "rpm": None, "tpm": 500, "concurrency": None, "weight": 1.0}
    assert [t["tenant"] for t in admin.get("/tenants").json()] == ["team-a"]
    assert admin.delete("/tenants/team-a").json()["deleted"] is True
    assert admin.delete("/tenants/team-a").status_code == 404
    assert admin.get("/tenants").json() == []
    user = admin.post("/keys", json={"tenant": "x", "role": "user"}).json()["key"]
    r = admin.put("/tenants/x", json={"rpm": 1}, headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 403  # an admin's call


@pytest.mark.parametrize("body,field", [
    ({"rpm": 0}, "rpm"), ({"tpm": -1}, "tpm"), ({"concurrency": "8"}, "concurrency"),
    ({"weight": 0}, "weight"), ({"weight": 5000}, "weight"),
])
def test_bad_tenant_limits_name_the_field(admin, body, field):
    r = admin.put("/tenants/team-a", json=body)
    assert r.status_code == 400 and f"'{field}'" in r.json()["detail"]
    assert admin.put("/tenants/a%20b", json={}).status_code == 400


def test_the_exchange_leases_a_keys_limits(admin):
    record = admin.post("/keys", json={"tenant": "t", "rpm": 50, "tpm": 900}).json()
    usages = [{"subject": f"key:{record['id']}", "resource": r, "window": 0, "used": 0,
               "granted": 0, "demand": 0} for r in ("requests", "tokens")]
    usages.append({"subject": "key:gone", "resource": "requests", "window": 0, "used": 3,
                   "granted": 10, "demand": 0})  # a budget no key sets any more
    reply = admin.post("/cell/leases", json={"gateway": "http://g1", "usages": usages}).json()
    assert reply["window_seconds"] == 30.0 and 0 < reply["ends_in"] <= 30.0
    assert reply["gateways"] == 1
    grants = {g["resource"]: g for g in reply["grants"]}
    assert set(grants) == {"requests", "tokens"}  # none for the budget that is gone
    assert grants["requests"]["granted"] == 50 and grants["tokens"]["pool"] == 900


@pytest.mark.parametrize("body,field", [
    ({"usages": []}, "gateway"), ({"gateway": "http://g", "usages": {}}, "usages"),
    ({"gateway": "http://g", "usages": [{"subject": "key:k", "resource": "cpu"}]}, "resource"),
    ({"gateway": "http://g", "usages": [{"subject": "key:k", "resource": "tokens",
                                         "window": "x"}]}, "usage"),
])
def test_bad_reports_are_refused_naming_the_field(admin, body, field):
    r = admin.post("/cell/leases", json=body)
    assert r.status_code == 400 and field in r.json()["detail"]


def test_the_exchange_is_for_members_only(admin):
    key = admin.post("/keys", json={"tenant": "t", "role": "admin"}).json()["key"]
    r = admin.post("/cell/leases", json={"gateway": "http://g", "usages": []},
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_a_store_from_before_the_concurrency_columns_gains_them(tmp_path):
    old = sqlite3.connect(tmp_path / "old.sqlite3")  # a file from before migrations
    old.executescript("""
        CREATE TABLE keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE, models TEXT NOT NULL, rpm INTEGER, tpm INTEGER,
            created REAL NOT NULL, expires REAL, revoked INTEGER NOT NULL DEFAULT 0);
        INSERT INTO keys VALUES ('key_old', 't', 'user', 'h', '[]', 5, NULL, 0, NULL, 0);
    """)
    old.close()
    store = KeyStore(Database.open(tmp_path / "old.sqlite3"))
    old = store.get("key_old")
    assert old.rpm == 5 and old.concurrency is None and old.max_priority is None
    _, made = store.create(KeyRequest("t", concurrency=4, max_priority="batch"))
    assert store.get(made.id).concurrency == 4 and store.get(made.id).max_priority == "batch"
