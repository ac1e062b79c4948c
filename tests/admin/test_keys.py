"""The admin with auth on, in process: API keys (made once, kept hashed, listed without secrets,
revoked, rotated), who may call which route, the audit trail, and a registration that tries to
take over a live server (the impostor of the security review)."""

from __future__ import annotations

import json
import time

import pytest
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.config.security import CellSecurity
from llmcell.protocol.auth import KEY, new_key

TOKEN = "t" * 43
CELL = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def admin(tmp_path, state):
    config = AdminConfig(**state, security=CellSecurity(TOKEN), bootstrap_admin_key=BOOTSTRAP)
    store = ModelStore(config.state)
    client = TestClient(create_admin_app(config, CellRegistry(store, config.dead_after,
                                                              time.monotonic())))
    client.state_path = config.state_path

    def stored() -> bytes:
        """Everything the store holds: the SQLite files, or PostgreSQL's rows."""
        if config.state_url is None:
            return b"".join(p.read_bytes() for p in config.state_path.parent.glob(
                "admin.sqlite3*"))
        rows = [*store.db.execute("SELECT * FROM keys"), *store.db.execute(
            "SELECT * FROM secrets")]
        return repr(rows).encode()

    client.stored = stored
    client.audit_entries = lambda: [json.loads(e) for (e,) in store.db.execute(
        "SELECT entry FROM audit ORDER BY seq")]
    yield client
    store.close()


BOOTSTRAP = new_key()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def make(admin, role: str, credential: dict = CELL, **kw) -> tuple[str, dict]:
    r = admin.post("/keys", json={"tenant": "team-a", "role": role, **kw}, headers=credential)
    assert r.status_code == 200, r.text
    body = r.json()
    return body.pop("key"), body


def test_a_key_is_shown_once_and_stored_only_as_a_hash(admin):
    key, record = make(admin, "user", models=["/sax/test/*"], rpm=600, tpm=200000,
                       expires_in=3600)
    assert KEY.match(key) and record["models"] == ["/sax/test/*"] and record["rpm"] == 600
    assert record["expires"] > time.time() + 3500
    listed = admin.get("/keys", headers=CELL).json()
    assert [r["id"] for r in listed if r["tenant"] == "team-a"] == [record["id"]]
    assert all("hash" not in r and "key" not in r for r in listed)
    on_disk = admin.stored()
    assert key.encode() not in on_disk and BOOTSTRAP.encode() not in on_disk
    assert key[len("sk-llmcell-"):].encode() not in on_disk


def test_roles_on_the_admins_routes(admin):
    viewer, _ = make(admin, "viewer")
    user, _ = make(admin, "user")
    publish = {"model": "/sax/test/m", "model_path": "smollm2-135m-instruct",
               "checkpoint": "None", "replicas": 1}
    assert admin.get("/health").status_code == 200  # open
    r = admin.get("/models")
    assert r.status_code == 401 and "no API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert admin.get("/models", headers=bearer(viewer)).status_code == 200
    assert admin.get("/metrics", headers=bearer(viewer)).status_code == 200
    r = admin.post("/models", json=publish, headers=bearer(user))
    assert r.status_code == 403 and "'admin' role" in r.json()["detail"]
    r = admin.post("/keys", json={"tenant": "x"}, headers=bearer(user))
    assert r.status_code == 403
    assert admin.post("/models", json=publish, headers=bearer(BOOTSTRAP)).status_code == 200
    r = admin.get("/cell/routes", headers=bearer(BOOTSTRAP))  # keys are not members of the cell
    assert r.status_code == 403
    assert admin.get("/cell/routes", headers=CELL).status_code == 200
    table = admin.get("/cell/keys", headers=CELL).json()
    assert {"secret", "keys", "version"} <= set(table) and all("hash" in k for k in table["keys"])


def test_revoke_and_rotate(admin):
    key, record = make(admin, "viewer")
    assert admin.get("/models", headers=bearer(key)).status_code == 200
    r = admin.post(f"/keys/{record['id']}/rotate", headers=CELL)
    assert r.status_code == 200 and r.json()["replaces"] == record["id"]
    new = r.json()["key"]
    assert new != key and r.json()["role"] == "viewer"
    r = admin.get("/models", headers=bearer(key))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert admin.get("/models", headers=bearer(new)).status_code == 200
    new_id = admin.get("/keys", headers=CELL).json()[-1]["id"]
    assert admin.delete(f"/keys/{new_id}", headers=CELL).json()["revoked"] is True
    assert admin.get("/models", headers=bearer(new)).status_code == 401
    assert admin.delete("/keys/key_nope", headers=CELL).status_code == 404
    assert admin.post(f"/keys/{new_id}/rotate", headers=CELL).status_code == 404  # revoked


@pytest.mark.parametrize("body,field", [
    ({"tenant": ""}, "tenant"), ({"tenant": "a b"}, "tenant"),
    ({"tenant": "t", "role": "root"}, "role"), ({"tenant": "t", "models": ["*"]}, "models"),
    ({"tenant": "t", "rpm": -1}, "rpm"), ({"tenant": "t", "expires_in": "soon"}, "expires_in"),
    ({"tenant": "t", "rpm": 0}, "rpm"), ({"tenant": "t", "tpm": 2.5}, "tpm"),
    ({"tenant": "t", "concurrency": -3}, "concurrency"),
    ({"tenant": "t", "max_priority": "urgent"}, "max_priority"),
])
def test_bad_key_requests_name_the_field(admin, body, field):
    r = admin.post("/keys", json=body, headers=CELL)
    assert r.status_code == 400 and f"'{field}'" in r.json()["detail"]


def test_admin_actions_are_audited_without_secrets(admin):
    key, record = make(admin, "admin", credential=bearer(BOOTSTRAP))
    publish = {"model": "/sax/test/m", "model_path": "smollm2-135m-instruct",
               "checkpoint": "None", "replicas": 1}
    assert admin.post("/models", json=publish, headers=bearer(key)).status_code == 200
    assert admin.post("/models", json=publish, headers=bearer(key)).status_code == 409
    forwarded = dict(CELL, **{"X-Llmcell-Tenant": "team-b", "X-Llmcell-Key-Id": "key_x"})
    assert admin.delete("/models/sax/test/m", headers=forwarded).status_code == 200
    path = admin.state_path.with_suffix(".audit.jsonl")
    text = path.read_text()
    assert key not in text and BOOTSTRAP not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(e["action"], e["key_id"], e["target"], e["outcome"][:7]) for e in lines] == [
        ("keys.create", lines[0]["key_id"], record["id"], "ok"),
        ("publish", record["id"], "/sax/test/m", "ok"),
        ("publish", record["id"], "/sax/test/m", "refused"),
        ("unpublish", "key_x", "/sax/test/m", "ok")]
    assert lines[-1]["tenant"] == "team-b"  # a member names the caller it acts for
    assert admin.audit_entries() == lines  # the database holds the same trail


def server(sid: str, address: str) -> dict:
    return {"server": {"id": sid, "address": address, "engine": "builtin",
                       "memory_bytes": 8 << 30, "group_size": 1, "models": ["*"]}}


def test_an_impostor_cannot_take_over_a_live_server(admin):
    assert admin.post("/cell/servers", json=server("server-0", "http://10.0.0.1:8000"),
                      headers=CELL).status_code == 200
    # the review's replay: no credential
    r = admin.post("/cell/servers", json=server("server-0", "http://evil:8000"))
    assert r.status_code == 401
    # with the credential (a compromised member), still not the live server's id or address
    r = admin.post("/cell/servers", json=server("server-0", "http://evil:8000"), headers=CELL)
    assert r.status_code == 409 and "is live" in r.json()["detail"]
    r = admin.post("/cell/servers", json=server("server-9", "http://10.0.0.1:8000"), headers=CELL)
    assert r.status_code == 409
    servers = admin.get("/cell/servers", headers=CELL).json()
    assert [s["address"] for s in servers] == ["http://10.0.0.1:8000"]
    # the same server registering again (a restart at the same address) is welcome
    assert admin.post("/cell/servers", json=server("server-0", "http://10.0.0.1:8000"),
                      headers=CELL).status_code == 200


def test_with_a_master_key_the_stores_secret_is_sealed(tmp_path):
    from llmcell import encryption

    (tmp_path / "master.key").write_text(encryption.new_master_key())
    state = tmp_path / "admin.sqlite3"

    def start(master: str | None):
        config = AdminConfig(state_path=state, security=CellSecurity(TOKEN),
                             master_key_file=master)
        store = ModelStore(config.state_path)
        return store, TestClient(create_admin_app(config, CellRegistry(
            store, config.dead_after, time.monotonic())))

    store, plain = start(None)  # made without a master key: the secret as it is
    key, _ = make(plain, "viewer")
    store.close()
    store, sealed = start(str(tmp_path / "master.key"))  # sealed from now on; keys still work
    assert sealed.get("/models", headers=bearer(key)).status_code == 200
    secret = store.db.execute("SELECT value FROM secrets").fetchone()[0]
    assert encryption.is_sealed(secret)
    store.close()
    with pytest.raises(ValueError, match="sealed: give its master key"):
        start(None)
    (tmp_path / "other.key").write_text(encryption.new_master_key())
    with pytest.raises(ValueError, match="another master key"):
        start(str(tmp_path / "other.key"))
