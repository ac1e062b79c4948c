"""The admin app in process (Starlette's TestClient, a real SQLite store in a temporary folder):
registration, placement through heartbeats, publish / update / unpublish, the routing view."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.admin.sizing import count_params
from llmcell.config.admin import AdminConfig

MODEL = "/sax/test/m"
SOURCE = "smollm2-135m-instruct"


@pytest.fixture()
def admin(tmp_path, state):
    config = AdminConfig(**state, model_roots=(str(tmp_path),))
    store = ModelStore(config.state)
    client = TestClient(create_admin_app(config, CellRegistry(store, config.dead_after,
                                                              time.monotonic())))
    yield client
    store.close()


def _register(admin, server_id: str, memory: int = 8 << 30) -> dict:
    r = admin.post("/cell/servers", json={"server": {
        "id": server_id, "address": f"http://{server_id}:8000", "engine": "builtin",
        "memory_bytes": memory, "group_size": 1, "models": ["*"]}})
    assert r.status_code == 200, r.text
    return r.json()


def _beat(admin, server_id: str, replicas: list[dict]) -> list[dict]:
    r = admin.post(f"/cell/servers/{server_id}/heartbeat", json={"replicas": replicas})
    assert r.status_code == 200, r.text
    return r.json()["assignments"]


def _ready(assignments: list[dict]) -> list[dict]:
    return [dict(a, state="ready", error="", running=0, waiting=0) for a in assignments]


def test_publish_places_replicas_on_heartbeats_and_routes_them(admin):
    _register(admin, "s0")
    _register(admin, "s1")
    r = admin.post("/models", json={"model": MODEL, "model_path": SOURCE, "checkpoint": "None",
                                    "replicas": 2})
    assert r.status_code == 200, r.text
    assert r.json()["max_replicas"] == 2 and r.json()["active_replicas"] == 0
    placed = {s: _beat(admin, s, []) for s in ("s0", "s1")}
    assert all(len(a) == 1 and a[0]["model"] == MODEL for a in placed.values()), placed
    assert admin.get("/cell/routes").json()["models"].get(MODEL, []) == []  # none ready yet
    for s, a in placed.items():
        _beat(admin, s, _ready(a))
    routes = admin.get("/cell/routes").json()["models"][MODEL]
    assert sorted(r["server_id"] for r in routes) == ["s0", "s1"]
    assert admin.get(f"/models{MODEL}").json()["active_replicas"] == 2


def test_publish_twice_is_409_update_scales_and_unpublish_removes(admin):
    spec = {"model": MODEL, "model_path": SOURCE, "checkpoint": "None", "replicas": 1}
    assert admin.post("/models", json=spec).status_code == 200
    assert admin.post("/models", json=spec).status_code == 409
    r = admin.put("/models", json=dict(spec, replicas=3))
    assert r.status_code == 200 and r.json()["max_replicas"] == 3
    assert admin.delete(f"/models{MODEL}").status_code == 200
    assert admin.get(f"/models{MODEL}").status_code == 404


def test_bad_bodies_are_clear_errors(admin):
    r = admin.post("/models", content=b'{"model": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = admin.post("/models", content=b"[" * 100 + b"]" * 100,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nests deeper" in r.text
    r = admin.post("/models", json={"model": MODEL, "model_path": "models/missing.gguf",
                                    "checkpoint": "None", "replicas": 1})
    assert r.status_code == 400 and "not under a model root" in r.text  # relative: not in tmp


def test_publish_reads_only_under_the_model_roots(admin, tmp_path):
    """Outside the roots every source gets the same answer, so the errors do not tell an existing
    file from a folder from nothing; inside them a bad source says what is wrong."""
    def publish(path: str):
        return admin.post("/models", json={"model": MODEL, "model_path": path,
                                           "checkpoint": "None", "replicas": 1})

    answers = {publish(p).json()["detail"].replace(repr(p), "P")
               for p in ("/etc/passwd", "/etc", "/no/such", f"{tmp_path}/../../etc/passwd")}
    assert len(answers) == 1 and "not under a model root" in answers.pop()
    (tmp_path / "notes.txt").write_text("hi")
    assert "cannot load its source" in publish(str(tmp_path / "missing.gguf")).json()["detail"]
    assert "expected a .gguf" in publish(str(tmp_path / "notes.txt")).json()["detail"]
    link = tmp_path / "escape.gguf"
    link.symlink_to("/etc/passwd")  # a link inside a root that points out of it
    assert "not under a model root" in publish(str(link)).json()["detail"]
    for bad in ("models/a\x00b.gguf", "~nobody-such-user/x"):  # found by the gateway's fuzzing
        r = publish(bad)
        assert r.status_code == 400, r.text
    r = publish(SOURCE)  # the built-in alias is always allowed
    assert r.status_code == 200, r.text


def test_an_unknown_server_heartbeat_is_404(admin):
    r = admin.post("/cell/servers/ghost/heartbeat", json={"replicas": []})
    assert r.status_code == 404


def test_an_encrypted_source_is_sized_with_the_admins_master_key(tmp_path):
    from llmcell import encryption
    from llmcell.engine.loader.registry import resolve_model_path

    (tmp_path / "master.key").write_text(encryption.new_master_key())
    key = encryption.read_key(tmp_path / "master.key")
    sealed = tmp_path / "m.gguf.enc"
    encryption.encrypt_file(resolve_model_path(SOURCE), sealed, key)
    body = {"model": MODEL, "model_path": str(sealed), "checkpoint": "None", "replicas": 1}
    for key_file, status, words in ((None, 400, "needs its master key"),
                                    (str(tmp_path / "master.key"), 200, "")):
        config = AdminConfig(state_path=tmp_path / f"{status}.sqlite3",
                             model_roots=(str(tmp_path),), master_key_file=key_file)
        store = ModelStore(config.state_path)
        client = TestClient(create_admin_app(config, CellRegistry(store, config.dead_after,
                                                                  time.monotonic())))
        r = client.post("/models", json=body)
        store.close()
        assert r.status_code == status and words in r.text, r.text
    plain = count_params(resolve_model_path(SOURCE))
    assert r.json()["memory_bytes"] == int(plain * config.bytes_per_param) + config.kv_reserve_bytes
