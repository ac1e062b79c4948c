"""Every error rule: OpenAI-shaped bodies, the right status, a message naming field and limit."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.server.conftest import MODEL, ServerProcess

Q = [{"role": "user", "content": "Hi"}]


def post(server, path, **kw):
    return httpx.post(server.url + path, timeout=60, **kw)


def assert_error(r, status, *words):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    for w in words:
        assert w in err["message"], (w, err["message"])
    return err


def test_invalid_value_names_field_and_range(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=Q, temperature=5)
    assert "temperature" in str(e.value) and "2" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.chat.completions.create(model=MODEL, messages=Q, top_p=0)
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(model=MODEL, messages=Q, n=1000)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-17", messages=Q)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")


def test_body_over_limit_is_413(server):
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (5 << 20)}]}
    assert_error(post(server, "/v1/chat/completions", json=big), 413, "limit", "4194304")


def test_context_window_gives_both_numbers(server):
    long_text = "word " * 2100
    r = post(server, "/v1/completions", json={"model": MODEL, "prompt": long_text,
                                               "max_tokens": 10})
    err = assert_error(r, 400, "2048", "max_tokens")
    assert err["code"] == "context_length_exceeded"
    r = post(server, "/v1/chat/completions",
             json={"model": MODEL, "messages": Q, "max_tokens": 5000})
    assert_error(r, 400, "2048", "5000")


@pytest.mark.parametrize("body,words", [
    (b"{not json", ["not valid JSON"]),
    (b"", ["empty"]),
    (b"[1, 2]", ["JSON object"]),
    (b'{"model": "m", "messages": "hi"}', ["messages"]),
    (b'{"model": "m", "messages": []}', ["messages", "non-empty"]),
    (b'{"messages": [{"role": "user", "content": "x"}]}', ["model", "required"]),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', ["role"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', ["content"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}',
     ["max_tokens", "integer"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
     ["stream", "boolean"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     ["text parts"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"a": 1}]}',
     ["tools[0]", "function"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}', ["UTF-8"]),
])
def test_malformed_chat_requests_are_400(server, body, words):
    r = post(server, "/v1/chat/completions", content=body,
             headers={"content-type": "application/json"})
    assert_error(r, 400, *words)


@pytest.mark.parametrize("extra,words", [
    ({"suffix": "end"}, ["suffix", "not supported"]),
    ({"best_of": 3}, ["best_of"]),
    ({"prompt": ""}, ["prompt", "empty"]),
    ({"prompt": [[]]}, ["prompt"]),
    ({"prompt": {"a": 1}}, ["prompt"]),
    ({"prompt": [10**9]}, ["vocabulary"]),
    ({"logprobs": 9}, ["logprobs", "5"]),
    ({"echo": True, "logprobs": 1}, ["echo"]),
])
def test_bad_completion_requests_are_400(server, extra, words):
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 2, **extra}
    assert_error(post(server, "/v1/completions", json=body), 400, *words)


def test_unknown_route_and_method_are_json(server):
    assert_error(httpx.get(server.url + "/v2/nothing"), 404, "no route")
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405, "not allowed")


def test_full_queue_is_429_with_retry_after():
    s = ServerProcess("--max-num-seqs", "1", "--max-queue", "0", "--kv-cache-memory", "64MiB")
    try:
        body = {"model": MODEL, "prompt": "Tell a long story", "max_tokens": 400,
                "ignore_eos": True, "stream": True}
        started = threading.Event()

        def hold():
            with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=120) as r:
                for _ in r.iter_lines():
                    started.set()

        t = threading.Thread(target=hold)
        t.start()
        assert started.wait(30)
        r = httpx.post(s.url + "/v1/completions", json={**body, "stream": False}, timeout=30)
        assert_error(r, 429, "capacity")
        assert r.headers["retry-after"] == "1"
        t.join(120)
    finally:
        s.stop()


def test_not_ready_is_503():
    """An external-engine server whose upstream is down: not ready, requests get 503."""
    dead = ServerProcess("--engine", "openai", "--upstream", "http://127.0.0.1:9",
                         "--served-model-name", MODEL, wait_ready=False)
    try:
        dead.wait_listening()
        assert httpx.get(dead.url + "/ready").status_code == 503
        r = httpx.post(dead.url + "/v1/chat/completions", json={"model": MODEL, "messages": Q})
        assert_error(r, 503, "upstream")
    finally:
        dead.stop()
