"""The gateway with auth on, in process: every route behind the key table it follows from the
admin; 401 and 403 in OpenAI's shape on the OpenAI routes and in Saxml's (per dialect) on the
Saxml ones; model allowances; revocation; keys that keep working while the admin is away."""

from __future__ import annotations

import pytest

from llmcell.protocol.auth import new_key
from tests.gateway.harness import MODEL, SOURCE, Gateway

TOKEN = "g" * 43
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}],
        "max_tokens": 4}


@pytest.fixture()
def gateway(tmp_path):
    g = Gateway(tmp_path, TOKEN)
    g.publish()
    g.publish("/sax/other/m2")
    g.serve()
    yield g
    g.close()


def key(gateway: Gateway, role: str, **kw) -> str:
    r = gateway.admin.post("/keys", json={"tenant": "team-a", "role": role, **kw})
    assert r.status_code == 200, r.text
    gateway.refresh()
    return r.json()["key"]


def auth(k: str) -> dict:
    return {"Authorization": f"Bearer {k}"}


def test_openai_routes_need_a_key_and_say_so_in_openais_shape(gateway):
    c = gateway.client
    r = c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = c.post("/v1/chat/completions", json=CHAT, headers=auth("sk-llmcell-" + "x" * 43))
    assert r.status_code == 401 and "not valid" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + "y" * 900})
    assert r.status_code == 401 and "512" in r.json()["error"]["message"]
    user = key(gateway, "user")
    r = c.post("/v1/chat/completions", json=CHAT, headers=auth(user))
    assert r.status_code == 200, r.text
    # the replica is called with the cell's credential, never the caller's key
    assert gateway.replica_headers[-1]["authorization"] == f"Bearer {TOKEN}"
    assert c.get("/health").status_code == 200  # open for probes


def test_roles_and_model_allowances(gateway):
    c = gateway.client
    viewer = key(gateway, "viewer")
    limited = key(gateway, "user", models=["/sax/test/*"])
    r = c.post("/v1/chat/completions", json=CHAT, headers=auth(viewer))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    assert c.get("/v1/models", headers=auth(viewer)).status_code == 200
    assert c.get("/metrics", headers=auth(viewer)).status_code == 200
    assert c.get("/metrics").status_code == 401
    r = c.post("/v1/chat/completions", json=dict(CHAT, model="m2"), headers=auth(limited))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert "/sax/other/m2" in r.json()["error"]["message"]
    assert c.post("/v1/chat/completions", json=CHAT, headers=auth(limited)).status_code == 200
    names = [m["id"] for m in c.get("/v1/models", headers=auth(limited)).json()["data"]]
    assert names == [MODEL]  # a key lists only the models it may use
    assert c.get("/v1/models/m2", headers=auth(limited)).status_code == 403


def test_saxml_routes_answer_in_their_own_shape_and_dialect(gateway):
    c = gateway.client
    user = key(gateway, "user", models=["/sax/test/*"])
    admin = key(gateway, "admin")
    publish = {"model": "/sax/test/new", "model_path": SOURCE, "checkpoint": "None",
               "replicas": 1}
    r = c.post("/publish", json=publish)
    assert r.status_code == 401 and "no API key" in r.json()["detail"]
    r = c.post("/publish", json=publish, headers=auth(user))
    assert r.status_code == 403 and "'admin' role" in r.json()["detail"]
    r = c.post("/publish", json=publish, headers=dict(auth(user), **{"X-Sax-Compat": "v1"}))
    assert r.status_code == 400 and "'admin' role" in r.json()["Error"]  # v1: 400 {"Error"}
    assert c.post("/publish", json=publish, headers=auth(admin)).status_code == 200
    query = {"model": "/sax/other/m2", "query": "hi"}
    r = c.post("/generate", json=query, headers=auth(user))
    assert r.status_code == 403 and "may not use the model" in r.json()["detail"]
    r = c.post("/generate", json=dict(query, model=MODEL), headers=auth(user))
    assert r.json() == [["Paris", -0.75]]
    assert c.get("/", headers={}).status_code == 200  # Saxml's hello stays open


def test_a_revoked_key_is_refused_once_the_gateway_reads_the_table(gateway):
    c = gateway.client
    user = key(gateway, "user")
    assert c.post("/v1/chat/completions", json=CHAT, headers=auth(user)).status_code == 200
    key_id = gateway.admin.get("/keys").json()[-1]["id"]
    gateway.admin.delete(f"/keys/{key_id}").raise_for_status()
    gateway.refresh()  # what the gateway does every 0.5 s
    r = c.post("/v1/chat/completions", json=CHAT, headers=auth(user))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_keys_keep_working_while_the_admin_is_away(gateway):
    user = key(gateway, "user")
    gateway.admin_up = False
    gateway.refresh()  # fails: the gateway keeps its last view and key table
    assert not gateway.view.admin_ok
    r = gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth(user))
    assert r.status_code == 200


def test_a_bootstrap_admin_key_manages_a_new_cell(tmp_path):
    bootstrap = new_key()
    g = Gateway(tmp_path, TOKEN, bootstrap=bootstrap)
    try:
        g.refresh()
        r = g.client.post("/publish", json={"model": MODEL, "model_path": SOURCE,
                                            "checkpoint": "None", "replicas": 1},
                          headers=auth(bootstrap))
        assert r.status_code == 200, r.text
    finally:
        g.close()


def test_a_key_for_a_model_that_is_later_unpublished_gets_a_404_not_a_crash(gateway):
    limited = key(gateway, "user", models=[MODEL])
    gateway.admin.delete("/models" + MODEL).raise_for_status()
    gateway.refresh()
    r = gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth(limited))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
