"""The Files and Batch API through the gateway, in process (tests/gateway/harness.py): bodies
pass through to the admin both ways, the caller's key goes along and scopes what it sees, and
the admin's errors arrive in OpenAI's shape. (The whole flow on real processes, with the runner:
tests/cell/test_batch.py.)"""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.gateway.harness import Gateway

TOKEN = "f" * 43
LINE = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}}


def client(g: Gateway, tenant: str) -> openai.OpenAI:
    r = g.admin.post("/keys", json={"tenant": tenant, "role": "user"})
    assert r.status_code == 200, r.text
    g.refresh()
    return openai.OpenAI(api_key=r.json()["key"], base_url="http://testserver/v1",
                         max_retries=0, http_client=g.client)


@pytest.fixture()
def g(tmp_path):
    g = Gateway(tmp_path, TOKEN)
    g.publish()
    g.serve()
    yield g
    g.close()


def test_files_are_uploaded_listed_read_and_deleted_through_the_gateway(g):
    a, b = client(g, "team-a"), client(g, "team-b")
    data = (json.dumps(LINE) + "\n").encode() * 3
    f = a.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert (f.bytes, f.filename, f.purpose) == (len(data), "in.jsonl", "batch")
    assert a.files.retrieve(f.id).id == f.id
    assert a.files.content(f.id).content == data
    assert [x.id for x in a.files.list()] == [f.id]
    assert [x.id for x in b.files.list()] == []  # another tenant's are not there
    with pytest.raises(openai.NotFoundError) as e:
        b.files.content(f.id)
    assert e.value.body["code"] == "file_not_found"
    assert a.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(f.id)


def test_a_batch_without_a_runner_is_refused_and_bad_fields_are_named(g):
    a = client(g, "team-a")
    f = a.files.create(file=("in.jsonl", io.BytesIO((json.dumps(LINE) + "\n").encode())),
                       purpose="batch")
    with pytest.raises(openai.BadRequestError) as e:
        a.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                         completion_window="24h")
    assert e.value.body["param"] == "endpoint"
    with pytest.raises(openai.InternalServerError) as e:  # 503: no --batch-gateway here
        a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert e.value.status_code == 503 and "--batch-gateway" in e.value.message
    with pytest.raises(openai.NotFoundError):
        a.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError) as e:
        a.batches.list(limit=0)
    assert e.value.body["param"] == "limit"


def test_the_files_api_is_behind_the_keys(g):
    anonymous = openai.OpenAI(api_key="sk-llmcell-" + "x" * 43, base_url="http://testserver/v1",
                              max_retries=0, http_client=g.client)
    with pytest.raises(openai.AuthenticationError):
        anonymous.files.list()


def test_the_admin_exports_batch_metrics(g):
    text = g.admin.get("/metrics").text
    assert 'llmcell:batches{status="in_progress"} 0.0' in text
    assert 'llmcell:batch_requests_total{result="completed"} 0.0' in text
    assert "llmcell:batch_tokens_total 0.0" in text


def test_an_upload_over_the_limit_is_refused_at_the_gateway(tmp_path):
    g = Gateway(tmp_path, TOKEN, max_file_bytes=100 << 10)
    g.publish()
    g.serve()
    a = client(g, "team-a")
    with pytest.raises(openai.APIStatusError) as e:
        a.files.create(file=("big.jsonl", io.BytesIO(b"x" * (300 << 10))), purpose="batch")
    assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    assert a.files.list().data == []
    g.close()


def test_a_file_over_the_line_limit_is_refused_naming_it(tmp_path):
    g = Gateway(tmp_path, TOKEN, admin={"max_file_lines": 5})
    g.publish()
    g.serve()
    a = client(g, "team-a")
    with pytest.raises(openai.BadRequestError, match="more than 5 lines"):
        a.files.create(file=("in.jsonl", io.BytesIO((json.dumps(LINE) + "\n").encode() * 6)),
                       purpose="batch")
    assert a.files.list().data == []
    assert list((tmp_path / "files").iterdir()) == []  # no blob left behind
    g.close()


def test_an_admin_answer_that_is_not_json_reaches_the_client_in_openai_shape():
    import httpx
    from starlette.testclient import TestClient

    from llmcell.config.gateway import GatewayConfig
    from llmcell.gateway.app import create_gateway_app

    def admin(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="Invalid HTTP request received.",
                              headers={"content-type": "text/plain"})

    app = create_gateway_app(GatewayConfig(admin="http://admin"), httpx.MockTransport(admin),
                             httpx.MockTransport(admin))
    r = TestClient(app).get("/v1/batches")
    assert r.status_code == 400
    assert r.json()["error"]["message"].endswith("Invalid HTTP request received.")
