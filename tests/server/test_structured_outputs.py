"""Structured outputs with the official `openai` client against a real server: JSON schemas
(streamed and not), json_object, vLLM's guided_choice, guided_regex and guided_grammar, and the
400s for guides that do not compile."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

from tests.server.conftest import MODEL

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["engineer", "doctor", "artist", "pilot"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16},
                   "minItems": 1, "maxItems": 3},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 24},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "role", "skills", "address"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema",
          "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
TOPICS = ["a nurse in Lyon", "a pilot", "a painter", "a chess player", "a baker", "a firefighter",
          "a software engineer", "a farmer", "a violinist", "a surgeon", "a teacher",
          "a sailor", "an architect", "a cyclist", "a poet", "a chef", "a judge", "a miner",
          "a gardener", "an astronaut"]


def _person(text: str) -> dict:
    data = json.loads(text)
    jsonschema.validate(data, PERSON)
    return data


@pytest.mark.slow
def test_json_schema_20_prompts_validate(client):
    for i, topic in enumerate(TOPICS):
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Describe {topic} as JSON."}],
            response_format=FORMAT, max_tokens=160, temperature=0.7 if i % 2 else 0.0, seed=i)
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        _person(choice.message.content)


def test_json_schema_streamed(client):
    for seed in range(3):
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "A person, as JSON."}],
            response_format=FORMAT, max_tokens=160, temperature=0.8, seed=seed, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason == "stop"
        _person(text)


def test_unconstrained_answer_is_not_this_json(client):
    """The model does not write the schema's JSON by itself: the guide is what makes it."""
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A person, as JSON."}],
        max_tokens=160, temperature=0)
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        _person(r.choices[0].message.content)


def test_json_object(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
        response_format={"type": "json_object"}, max_tokens=200, temperature=0)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # cut by max_tokens: still a JSON object's beginning
        assert r.choices[0].message.content.startswith("{")


def test_guided_choice_and_regex_on_completions(client):
    r = client.completions.create(model=MODEL, prompt="Is the sky blue? Answer:", max_tokens=8,
                                  extra_body={"guided_choice": ["yes", "no", "maybe"]}, n=3,
                                  temperature=1.0, seed=1)
    assert all(c.text in ("yes", "no", "maybe") for c in r.choices)
    # [0-9], not \d: a regex's \d is any Unicode digit (as Python's), and a sampled answer may
    # pick digits of several tokens each and run out of max_tokens
    r = client.completions.create(model=MODEL, prompt="Call me at", max_tokens=12,
                                  temperature=1.0, seed=3,
                                  extra_body={"guided_regex": r"[0-9]{3}-[0-9]{4}"})
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.choices[0].text)
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Pick a colour."}], max_tokens=10,
        extra_body={"structured_outputs": {"choice": ["red", "green"]}})
    assert r.choices[0].message.content in ("red", "green")


def test_guided_grammar_gbnf_and_lark(client):
    for grammar in ('root ::= "A" digit digit\ndigit ::= [0-9]', 'start: "B" /[0-9]{2}/'):
        r = client.completions.create(model=MODEL, prompt="Code:", max_tokens=8, temperature=1.0,
                                      extra_body={"guided_grammar": grammar})
        assert re.fullmatch(r"[AB][0-9]{2}", r.choices[0].text), r.choices[0].text


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "format": "no-such-format"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"guided_regex": "(unclosed"}, "guided_regex"),
    ({"guided_grammar": 'root ::= "a" | missing'}, "guided_grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "deep", "schema": json.loads('{"items":' * 40 + "{}" + "}" * 40)}}},
     "response_format.json_schema.schema"),
    ({"guided_regex": "a" * 70000}, "guided_regex"),
])
def test_bad_guides_are_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}],
                                       extra_body=extra)
    assert e.value.body["param"] == param, e.value.body
    assert e.value.status_code == 400


def test_guided_metrics(server, client):
    before = server.metric("llmcell:guided_requests_total")
    client.completions.create(model=MODEL, prompt="x", max_tokens=4,
                              extra_body={"guided_choice": ["a", "b"]})
    assert server.metric("llmcell:guided_requests_total") == before + 1
    assert server.metric("llmcell:grammar_compile_seconds_count") >= 1
    assert server.metric("llmcell:grammar_errors_total") >= 0
