"""Batch input lines checked as the online API checks a request, and the batch's create body."""

from __future__ import annotations

import json

import pytest

from llmcell.protocol.batch import BatchLine, LineError, check_create, parse_line, request_id

CHAT = "/v1/chat/completions"


def line(**over) -> str:
    item = {"custom_id": "a", "method": "POST", "url": CHAT,
            "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}}
    item.update(over)
    return json.dumps(item)


def test_a_good_line_parses_with_its_model():
    parsed = parse_line(line(), 3, CHAT)
    assert isinstance(parsed, BatchLine) and (parsed.line, parsed.custom_id, parsed.model) == (
        3, "a", "m")


@pytest.mark.parametrize("text,code,words", [
    ("{nope", "invalid_json", "line 5 is not JSON"),
    ("[1, 2]", "invalid_request", "not a JSON object"),
    (line(custom_id=""), "missing_required_parameter", "custom_id"),
    (line(method="GET"), "invalid_request", "method"),
    (line(url="/v1/completions"), "invalid_url", "endpoint"),
    (line(body=None), "missing_required_parameter", "body"),
    (line(body={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}),
     "invalid_request", "stream"),
    (line(body={"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
     "invalid_value", "max_tokens"),
    (line(body={"model": "m", "messages": []}), "invalid_value", "messages"),
])
def test_bad_lines_become_errors_naming_the_line_and_field(text, code, words):
    parsed = parse_line(text, 5, CHAT)
    assert isinstance(parsed, LineError) and parsed.line == 5, parsed
    assert words in parsed.message and parsed.code == code, parsed


@pytest.mark.parametrize("body,param", [
    ({}, "input_file_id"),
    ({"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h"},
     "endpoint"),
    ({"input_file_id": "f", "endpoint": CHAT, "completion_window": "7d"}, "completion_window"),
    ({"input_file_id": "f", "endpoint": CHAT, "completion_window": "24h",
      "metadata": {"k": 1}}, "metadata"),
])
def test_a_bad_create_body_names_the_field(body, param):
    with pytest.raises(Exception) as e:
        check_create(body)
    assert e.value.status == 400 and e.value.param == param


def test_a_lines_request_id_is_the_same_every_time():
    assert request_id("batch_abc", 7) == request_id("batch_abc", 7) == "batch_req_abc_7"
