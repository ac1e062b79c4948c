"""The gateway's Saxml REST in process, in both dialects: model management forwarded to a real
admin app (over `httpx.ASGITransport`, with its SQLite store in a temporary folder), generate
routed to replicas that are `httpx.MockTransport` handlers. No processes, no sockets."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig
from llmcell.config.gateway import GatewayConfig
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.saxml_routes import saxml_routes
from llmcell.gateway.view import CellView
from llmcell.protocol.saxml import SaxError
from llmcell.router import make_policy

MODEL = "/sax/test/m"
SOURCE = "smollm2-135m-instruct"
V1 = {"X-Sax-Compat": "v1"}


class Gateway:
    def __init__(self, tmp_path, admin_up: bool = True) -> None:
        config = AdminConfig(state_path=tmp_path / "admin.sqlite3")
        self.store = ModelStore(config.state_path)
        self.admin_app = admin_app = create_admin_app(config, CellRegistry(self.store, config.dead_after,
                                                          time.monotonic()))
        transport = httpx.ASGITransport(admin_app) if admin_up else httpx.MockTransport(
            self._unreachable)
        self.admin = httpx.AsyncClient(base_url="http://admin", transport=transport)
        self.chats: list[dict] = []  # what the replicas were sent
        self.view = view = CellView(GatewayConfig(admin="http://admin"), self.admin)
        replicas = httpx.AsyncClient(transport=httpx.MockTransport(self._replica))
        forwarder = Forwarder(view, make_policy("least_load"), replicas, self.admin, 0)
        routes, on_error = saxml_routes(self.admin, view, forwarder, "v2", 1 << 20)
        self.client = TestClient(Starlette(routes=routes,
                                           exception_handlers={SaxError: on_error}))

    @staticmethod
    def _unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def _replica(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.chats.append(body)
        return httpx.Response(200, json={"choices": [{
            "index": 0, "message": {"role": "assistant", "content": "Paris"},
            "logprobs": {"content": [{"token": "Par", "logprob": -0.5},
                                     {"token": "is", "logprob": -0.25}]},
            "finish_reason": "stop"}]})

    def serve(self, model: str = MODEL) -> None:
        """A server joins the admin and reports `model`'s replica ready at http://r0."""
        admin = TestClient(self.admin_app)  # the same admin app, directly
        admin.post("/cell/servers", json={"server": {
            "id": "r0", "address": "http://r0", "engine": "builtin", "memory_bytes": 8 << 30,
            "group_size": 1, "models": ["*"]}}).raise_for_status()
        assigned = admin.post("/cell/servers/r0/heartbeat", json={"replicas": []}).json()
        ready = [dict(a, state="ready", error="", running=0, waiting=0)
                 for a in assigned["assignments"]]
        admin.post("/cell/servers/r0/heartbeat", json={"replicas": ready}).raise_for_status()
        asyncio.run(self.view.refresh())  # the gateway follows the admin's routing view


@pytest.fixture()
def gateway(tmp_path):
    g = Gateway(tmp_path)
    yield g
    g.store.close()


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
        g.store.close()
