"""Reading guided-decoding and tool fields into wire types: every form accepted, every malformed
one a 400 naming its field."""

from __future__ import annotations

import json

import pytest

from llmcell.protocol.errors import APIError
from llmcell.protocol.guided import MAX_SPEC_BYTES, parse_guided
from llmcell.protocol.openai import parse_chat, parse_completion
from llmcell.protocol.tools import parse_tools

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize("body, kind", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}},
     "json_schema"),
    ({"response_format": {"type": "json_object"}}, "json_object"),
    ({"guided_json": SCHEMA}, "json_schema"),
    ({"guided_json": json.dumps(SCHEMA)}, "json_schema"),
    ({"structured_outputs": {"regex": "a+"}}, "regex"),
    ({"guided_choice": ["x", "y"]}, "choice"),
    ({"guided_grammar": 'start: "a"'}, "grammar"),
])
def test_forms(body, kind):
    assert parse_guided(body).kind == kind
    assert parse_completion({"model": "m", "prompt": "p", **body}).sampling.guided.kind == kind


def test_text_format_is_no_guide():
    assert parse_guided({"response_format": {"type": "text"}}) is None


@pytest.mark.parametrize("body, param", [
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": [1]}}},
     "response_format.json_schema.schema"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_choice": ["a", ""]}, "guided_choice"),
    ({"guided_choice": ["a"] * 300}, "guided_choice"),
    ({"guided_regex": ""}, "guided_regex"),
    ({"guided_regex": "a" * (MAX_SPEC_BYTES + 1)}, "guided_regex"),
    ({"structured_outputs": [1]}, "structured_outputs"),
    ({"guided_json": json.loads('{"items":' * 40 + "{}" + "}" * 40)}, "guided_json"),
    ({"guided_regex": "a", "structured_outputs": {"choice": ["b"]}}, "guided_regex"),
])
def test_malformed(body, param):
    with pytest.raises(APIError) as e:
        parse_guided(body)
    assert e.value.status == 400 and e.value.param == param


def test_tools_parse_and_force():
    tools = [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]
    assert parse_tools({"tools": tools}).guide() is None  # auto: the model decides
    assert parse_tools({"tools": tools, "tool_choice": "none"}) is None
    forced = parse_tools({"tools": tools, "tool_choice": "required"}).guide()
    assert forced.kind == "lark" and '"const": "f"' in forced.spec and "{0,7}" in forced.spec
    one = parse_tools({"tools": tools, "tool_choice": "required",
                       "parallel_tool_calls": False}).guide()
    assert "{0," not in one.spec
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}],
                      "tools": tools, "tool_choice": {"type": "function",
                                                      "function": {"name": "f"}}})
    assert req.sampling.guided.kind == "lark" and req.tool_dicts()[0]["function"]["name"] == "f"


def test_assistant_tool_calls_and_tool_messages_parse():
    req = parse_chat({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"}]})
    assert req.messages[1]["tool_calls"][0]["function"]["name"] == "f"
    assert req.messages[2]["tool_call_id"] == "c1"
    with pytest.raises(APIError) as e:
        parse_chat({"model": "m", "messages": [{"role": "assistant", "content": None,
                                                "tool_calls": [{"function": {
                                                    "name": "f", "arguments": "{bad"}}]}]})
    assert e.value.param == "messages[0].tool_calls[0]"
