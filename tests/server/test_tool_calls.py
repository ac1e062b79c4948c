"""Tool calling with the official `openai` client against a real server: named and `required`
choices give calls whose arguments validate against the tool's schema, streamed deltas reassemble
to the same calls, a two-turn exchange with a `tool` message, and the 400s."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.server.conftest import MODEL

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 30},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER,
                                           "description": "The weather in a city."}},
         {"type": "function", "function": {"name": "add", "parameters": ADD,
                                           "description": "Add two integers."}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _check(calls) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_named_tool_choice(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=80, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    _check(choice.message.tool_calls)
    assert not choice.message.content


def test_required_tool_choice_one_call(client):
    for seed in range(4):
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Add 2 and 3, please."}],
            tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=80,
            temperature=0.7, seed=seed)
        calls = r.choices[0].message.tool_calls
        assert len(calls) == 1 and r.choices[0].finish_reason == "tool_calls"
        _check(calls)


def test_streamed_calls_reassemble(client):
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                  max_tokens=200, temperature=0.8, seed=5)
    whole = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            c = calls.setdefault(d.index, {"name": "", "arguments": ""})
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    streamed = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    assert streamed == [(c.function.name, json.loads(c.function.arguments))
                        for c in whole.message.tool_calls]
    _check(whole.message.tool_calls)


def test_two_turn_exchange_with_tool_message(client, server):
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=80, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    follow = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'}]
    second = client.chat.completions.create(model=MODEL, messages=follow, tools=TOOLS,
                                            max_tokens=30, temperature=0)
    assert second.choices[0].message.content
    # the model saw the call and the tool's answer: the prompt holds both
    import httpx

    ids = httpx.post(server.url + "/tokenize", json={"model": MODEL, "messages": follow,
                                                     "tools": TOOLS}).json()["tokens"]
    text = httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["prompt"]
    assert '"temperature": 18' in text and "get_weather" in text and "<tool_call>" in text
    assert second.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("extra, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
     "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/missing"}}}}}],
      "tool_choice": "required"}, "tool_choice"),
])
def test_bad_tools_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4,
                                       extra_body=extra)
    assert e.value.body["param"] == param, e.value.body


def test_tool_message_needs_its_call_id(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=ASK + [
            {"role": "tool", "content": "18C"}])
    assert e.value.body["param"] == "messages[1].tool_call_id"
