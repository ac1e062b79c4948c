"""The Responses API's pure parts: requests checked and turned into chat bodies, chat answers
and streams turned into response objects and typed events (tool calls streamed in fragments, as
vLLM sends them, included)."""

from __future__ import annotations

import pytest

from llmcell.gateway.responses_convert import StreamConverter, from_completion
from llmcell.protocol.errors import APIError
from llmcell.protocol.responses import chat_body, parse_responses


def test_request_to_chat_body():
    req = parse_responses({
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "42"}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"}})
    body = chat_body(req, [{"role": "user", "content": "before"}])
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user", "assistant",
                                                     "tool"]
    assert body["max_completion_tokens"] == 9 and body["temperature"] == 0
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize("body, param", [
    ({"input": "x"}, "model"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0]"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "previous_response_id": 5}, "previous_response_id"),
])
def test_bad_requests(body, param):
    with pytest.raises(APIError) as e:
        parse_responses(body)
    assert e.value.status == 400 and e.value.param == param


def test_completion_to_response():
    r = from_completion("resp_1", 1, {"instructions": None}, {"model": "m", "choices": [{
        "message": {"content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                     "function": {"name": "f",
                                                                  "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    assert r["status"] == "completed" and r["usage"]["total_tokens"] == 5
    assert r["output"][0]["type"] == "function_call" and r["output"][0]["call_id"] == "call_1"


def test_stream_events_with_fragmented_tool_call():
    conv = StreamConverter("resp_1", 1, "m", {})
    events = conv.start()
    events += conv.feed({"choices": [{"delta": {"content": "Let me look."}}]})
    events += conv.feed({"choices": [{"delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}]}}]})
    events += conv.feed({"choices": [{"delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": ': 1}'}}]}, "finish_reason": "tool_calls"}]})
    events += conv.feed({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}})
    events += conv.finish()
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    final = events[-1]["response"]
    assert final["output"][1]["arguments"] == '{"a": 1}' and final["usage"]["output_tokens"] == 6
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
