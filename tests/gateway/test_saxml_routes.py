"""The gateway's Saxml REST in process, in both dialects: model management forwarded to a real
admin app, generate routed to mock replicas (tests/gateway/harness.py)."""

from __future__ import annotations

import pytest

from tests.gateway.harness import MODEL, SOURCE, Gateway

V1 = {"X-Sax-Compat": "v1"}


@pytest.fixture()
def gateway(tmp_path):
    g = Gateway(tmp_path)
    yield g
    g.close()


def publish(gateway: Gateway, headers=None, **overrides):
    key = "path" if headers == V1 else "model_path"
    body = {"model": MODEL, key: SOURCE, "checkpoint": "None", "replicas": 1, **overrides}
    return gateway.client.post("/publish", json=body, headers=headers)


def test_v2_round_trip_publish_listcell_generate_unpublish(gateway):
    r = publish(gateway)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": MODEL, "model_path": SOURCE, "checkpoint": "None",
                        "replicas": 1}
    cell = gateway.client.get("/listcell", params={"model": MODEL}).json()
    assert cell["max_replicas"] == 1 and cell["active_replicas"] == 0
    assert gateway.client.get("/listall", params={"sax_cell": "/sax/test"}).json() == [MODEL]

    gateway.serve()
    r = gateway.client.post("/generate", json={"model": MODEL, "query": "Capital of France?"})
    assert r.status_code == 200, r.text
    assert r.json() == [["Paris", -0.75]]  # the text and the sum of its tokens' logprobs
    sent = gateway.chats[-1]
    assert sent["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"], sent["top_p"]) == (
        128, 0.5, 200, 0.95)  # Saxml's defaults

    assert gateway.client.post("/unpublish", json={"model": MODEL}).json() == {"model": MODEL}
    r = gateway.client.post("/generate", json={"model": MODEL, "query": "again?"})
    assert r.status_code == 404 and r.json() == {"detail": f"model {MODEL} is not published"}


def test_v1_keys_replies_and_errors(gateway):
    r = publish(gateway, V1)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == SOURCE and "model_path" not in r.json()
    r = publish(gateway, V1)  # already published: the admin's 409 is a 400 in v1
    assert r.status_code == 400 and "already published" in r.json()["Error"]
    r = gateway.client.post("/listall", json={"sax_cell": "/sax/test"}, headers=V1)
    assert r.status_code == 400 and "not part of the v1" in r.json()["Error"]

    gateway.serve()
    query = {"model": MODEL, "query": "Capital of France?"}
    r = gateway.client.post("/generate", json=query, headers=V1)
    assert r.json() == {"generate_response": [["Paris", -0.75]]}
    r = gateway.client.post("/generate", json=dict(query, stray=1), headers=V1)
    assert r.status_code == 400 and "unexpected key(s) ['stray']" in r.json()["Error"]
    r = gateway.client.post("/generate", json=dict(query, stray=1))  # v2 ignores extra keys
    assert r.status_code == 200


@pytest.mark.parametrize("extra,key", [
    ({"per_example_top_p": 0}, "per_example_top_p"), ({"temperature": 9}, "temperature"),
    ({"per_example_max_decode_steps": 0}, "per_example_max_decode_steps"),
])
def test_bad_extra_inputs_name_the_key_in_either_dialect(gateway, extra, key):
    query = {"model": MODEL, "query": "q", "extra_inputs": extra}
    r = gateway.client.post("/generate", json=query)
    assert r.status_code == 400 and f"'extra_inputs.{key}'" in r.json()["detail"]
    r = gateway.client.post("/generate", json=query, headers=V1)
    assert r.status_code == 400 and f"'extra_inputs.{key}'" in r.json()["Error"]
    assert gateway.chats == []


def test_bad_bodies_answer_in_the_callers_dialect(gateway):
    c = gateway.client
    nan = b'{"model": "/sax/test/m", "query": NaN}'
    for headers, field in ((None, "detail"), (V1, "Error")):
        r = c.post("/generate", content=nan, headers={"Content-Type": "application/json",
                                                      **(headers or {})})
        assert r.status_code == 400 and "NaN" in r.json()[field], r.text
        r = c.post("/publish", content=b"{}", headers={"Content-Type": "text/plain",
                                                       **(headers or {})})
        assert r.status_code == (400 if headers == V1 else 415) and field in r.json()
    r = publish(gateway, replicas=0)
    assert r.status_code == 400 and "'replicas'" in r.json()["detail"]


def test_an_unreachable_admin_is_503_and_says_serving_continues(tmp_path):
    g = Gateway(tmp_path, admin_up=False)
    try:
        r = publish(g)
        assert r.status_code == 503 and "serving continues" in r.json()["detail"]
    finally:
        g.close()
