"""The Responses API through a real cell with auth on (admin, model server, gateway as
processes on loopback) and the official `openai` client: create, stream (the documented event
sequence), a follow-up the model sees, structured output and function tools, retrieve and
delete, and isolation between tenants."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.cell.test_auth import ADMIN_KEY, keys, secure_cell  # noqa: F401 (fixture)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                           "sunny": {"type": "boolean"}},
          "required": ["city", "sunny"], "additionalProperties": False}


@pytest.fixture()
def cell_clients(secure_cell):  # noqa: F811
    cell = secure_cell
    cell.start_server("server-0")
    cell.start_gateway()
    cell.publish(1)
    cell.wait_active(1)
    made = [keys(cell, "create", "--tenant", t, "--role", "user").stdout.strip()
            for t in ("team-a", "team-b")]
    import time

    time.sleep(1.0)  # the gateway follows the key table every 0.5 s
    return cell, [openai.OpenAI(base_url=cell.gateway.url + "/v1", api_key=k, max_retries=0)
                  for k in made]


def _prompt_text(cell, messages: list[dict]) -> str:
    """What a chat with these messages puts before the model (the server's own tokenizer)."""
    server = next(p for p in cell.procs if p.args[0] == "server")
    auth = {"Authorization": f"Bearer {cell.env['LLMCELL_CELL_TOKEN']}"}
    ids = httpx.post(server.url + "/tokenize", headers=auth,
                     json={"model": "/sax/test/smollm2", "messages": messages}).json()["tokens"]
    return httpx.post(server.url + "/detokenize", headers=auth,
                      json={"tokens": ids}).json()["prompt"]


@pytest.mark.slow
def test_responses_create_stream_follow_up_retrieve_delete_isolation(cell_clients):
    cell, (a, b) = cell_clients
    first = a.responses.create(model="smollm2", input="My name is Ada. Say hello.",
                               instructions="Answer briefly.", max_output_tokens=12,
                               temperature=0)
    assert first.id.startswith("resp_") and first.status in ("completed", "incomplete")
    assert first.output_text and first.usage.input_tokens > 0
    assert first.output[0].type == "message"

    # the follow-up's prompt holds the first turn: more input tokens than the turn alone
    follow = a.responses.create(model="smollm2", input="What is my name?",
                                previous_response_id=first.id, max_output_tokens=8,
                                temperature=0)
    alone = a.responses.create(model="smollm2", input="What is my name?", max_output_tokens=8,
                               temperature=0, store=False)
    assert follow.usage.input_tokens > alone.usage.input_tokens + 10
    expected = [{"role": "user", "content": "My name is Ada. Say hello."},
                {"role": "assistant", "content": first.output_text},
                {"role": "user", "content": "What is my name?"}]
    assert "My name is Ada" in _prompt_text(cell, expected)

    # streaming: the documented sequence, and the stream's text is the response's
    events = list(a.responses.create(model="smollm2", input="Count to three.",
                                     max_output_tokens=10, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done",
                          "response.completed" if events[-1].response.status == "completed"
                          else "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    streamed_id = events[-1].response.id
    assert a.responses.retrieve(streamed_id).output_text == text

    # the SDK's streaming helper works unchanged (it wants `response.completed`: an answer
    # that ends before max_output_tokens)
    with a.responses.stream(model="smollm2", input="Say hi.", max_output_tokens=200,
                            temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(deltas)

    # retrieve, isolation, delete, store=false
    assert a.responses.retrieve(first.id).output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="smollm2", input="x", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(alone.id)
    a.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="smollm2", input="x", previous_response_id=first.id)


@pytest.mark.slow
def test_responses_structured_output_and_function_tools(cell_clients):
    cell, (a, _) = cell_clients
    r = a.responses.create(model="smollm2", input="The weather in Oslo, as JSON.",
                           text={"format": {"type": "json_schema", "name": "weather",
                                            "schema": SCHEMA, "strict": True}},
                           max_output_tokens=60, temperature=0)
    jsonschema.validate(json.loads(r.output_text), SCHEMA)

    tools = [{"type": "function", "name": "get_weather", "description": "Weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                        "maxLength": 20}},
                             "required": ["city"], "additionalProperties": False}}]
    r = a.responses.create(model="smollm2", input="Weather in Oslo?", tools=tools,
                           tool_choice={"type": "function", "name": "get_weather"},
                           max_output_tokens=60, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), tools[0]["parameters"])
    # the tool's answer goes back as a function_call_output item on the stored conversation
    after = a.responses.create(model="smollm2", previous_response_id=r.id, tools=tools,
                               input=[{"type": "function_call_output",
                                       "call_id": calls[0].call_id,
                                       "output": '{"sky": "clear", "celsius": 4}'}],
                               max_output_tokens=20, temperature=0)
    assert after.output_text
    assert after.usage.input_tokens > r.usage.input_tokens

    with pytest.raises(openai.BadRequestError) as e:
        a.responses.create(model="smollm2", input=[{"type": "web_search_call"}])
    assert e.value.body["param"] == "input[0].type"
