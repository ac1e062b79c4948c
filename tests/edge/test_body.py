"""The one body reader, alone and behind the gateway's and the admin's routes (in process)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from llmcell.config.gateway import GatewayConfig
from llmcell.edge import body
from llmcell.edge.errors import openai_error_handlers, read_openai_json
from llmcell.gateway.app import create_gateway_app

JSON = {"content-type": "application/json"}
NESTED = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def echo():
    async def handler(request: Request):
        return JSONResponse(await read_openai_json(request, 100_000))

    app = Starlette(routes=[Route("/", handler, methods=["POST"])],
                    exception_handlers=openai_error_handlers())
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def gateway():
    """The gateway with no admin behind it: every case here is answered before routing."""
    app = create_gateway_app(GatewayConfig(admin="http://127.0.0.1:9"))
    return TestClient(app, raise_server_exceptions=False)


def _error(r, status: int) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["message"]


def test_a_plain_object_passes(echo):
    r = echo.post("/", content=b'{"a": [1, {"b": "caf\\u00e9"}]}', headers=JSON)
    assert r.status_code == 200 and r.json() == {"a": [1, {"b": "café"}]}
    r = echo.post("/", content=b"{}", headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused(echo, value):
    msg = _error(echo.post("/", content=f'{{"temperature": {value}}}'.encode(), headers=JSON), 400)
    assert value in msg


def test_deep_nesting_is_refused(echo):
    assert "nests deeper than 64" in _error(echo.post("/", content=NESTED.encode(), headers=JSON),
                                           400)
    shallow_but_over = "[" * 70 + "]" * 70
    assert "nests deeper" in _error(echo.post("/", content=shallow_but_over.encode(),
                                              headers=JSON), 400)


def test_unpaired_surrogates_are_refused(echo):
    r = echo.post("/", content=b'{"messages": [{"content": "\\ud800"}]}', headers=JSON)
    assert "field 'messages' holds an unpaired surrogate" in _error(r, 400)
    ok = echo.post("/", content=b'{"s": "\\ud83d\\ude42"}', headers=JSON)  # a paired one: fine
    assert ok.status_code == 200 and ok.json() == {"s": "🙂"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_not_declared_json_is_415(echo, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = echo.post("/", content=b'{"a": 1}', headers=headers)
    assert "application/json" in _error(r, 415)


def test_size_utf8_and_shape(echo):
    assert "exceeds the limit of 100000 bytes" in _error(
        echo.post("/", content=b'{"a": "' + b"x" * 200_000 + b'"}', headers=JSON), 413)
    assert "not valid UTF-8" in _error(echo.post("/", content=b'{"a": "\xff"}', headers=JSON),
                                       400)
    assert "empty" in _error(echo.post("/", content=b"", headers=JSON), 400)
    assert "JSON object" in _error(echo.post("/", content=b"[1]", headers=JSON), 400)


def test_check_value_is_iterative():
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError, match="deeper than 64"):
        body.check_value(value, lambda s, m, c: ValueError(m))


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty",
                                   "frequency_penalty", "repetition_penalty", "min_p"])
def test_gateway_refuses_nan_in_sampling_fields(gateway, field):
    raw = ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "%s": NaN}'
           % field).encode()
    assert "NaN" in _error(gateway.post("/v1/chat/completions", content=raw, headers=JSON), 400)


def test_gateway_refuses_deep_nesting_and_surrogates(gateway):
    deep = '{"model": "m", "messages": ' + NESTED + "}"
    r = gateway.post("/v1/chat/completions", content=deep.encode(), headers=JSON)
    assert "nests deeper" in _error(r, 400)
    lone = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'
    assert "surrogate" in _error(gateway.post("/v1/chat/completions", content=lone,
                                              headers=JSON), 400)


def test_gateway_publish_errors_keep_the_saxml_shape(gateway):
    r = gateway.post("/publish", content=NESTED.encode(), headers=JSON)
    assert r.status_code == 400 and r.json() == {
        "detail": "the request body nests deeper than 64 levels"}
    r = gateway.post("/publish", content=NESTED.encode(), headers=dict(JSON, **{
        "x-sax-compat": "v1"}))
    assert r.status_code == 400 and r.json() == {
        "Error": "the request body nests deeper than 64 levels"}


def test_cross_site_form_posts_cannot_publish_or_unpublish(gateway):
    for path in ("/publish", "/unpublish", "/update"):
        r = gateway.post(path, content=b'{"model": "/sax/test/m"}',
                         headers={"content-type": "text/plain", "origin": "https://evil.example"})
        assert r.status_code == 415, (path, r.text)
