"""The gateway's OpenAPI document is generated from the wire types: it is valid OpenAPI 3.1, and
what it calls valid the parsers accept (and what it calls out of range they refuse)."""

from __future__ import annotations

import os

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from llmcell.protocol.openai import parse_chat, parse_completion
from llmcell.protocol.openapi import CHAT, GENERATE, gateway_openapi
from llmcell.protocol.saxml import GENERATE_DEFAULTS, SaxError, parse_generate
from llmcell.protocol.errors import APIError


def test_the_document_loads_and_covers_every_public_route():
    doc = gateway_openapi()
    schema = schemathesis.openapi.from_dict(doc)
    assert all(r.ok() for r in schema.get_all_operations())
    assert {"/v1/chat/completions", "/v1/completions", "/publish", "/generate"} <= set(doc["paths"])
    assert set(GENERATE["properties"]["extra_inputs"]["properties"]) == set(GENERATE_DEFAULTS)


@pytest.mark.parametrize("field,bad", [("temperature", 2.5), ("top_p", 0), ("n", 17),
                                       ("max_tokens", 0), ("top_logprobs", 21)])
def test_a_value_the_document_refuses_the_parser_refuses(field, bad):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: bad,
            **({"logprobs": True} if field == "top_logprobs" else {})}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, CHAT)
    with pytest.raises(APIError):
        parse_chat(body)


def _accepts(path: str, method: str, parse, error) -> None:
    op = schemathesis.openapi.from_dict(gateway_openapi())[path][method]

    @given(case=op.as_strategy())
    @settings(max_examples=int(os.environ.get("LLMCELL_PARSE_EXAMPLES", "150")), deadline=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        try:
            parse(case.body)
        except error as e:  # only rules the document cannot state may refuse a valid body
            assert any(w in str(e) for w in ("'top_logprobs' requires", "'best_of'", "'echo'",
                                             "must not be empty", "tool calls",
                                             "give one output format", "needs 'tools'",
                                             "cannot be combined", "which is not in 'tools'",
                                             "names a function twice",
                                             "'stream_options' is only allowed")), e
    check()


def test_bodies_the_document_calls_valid_parse():
    _accepts("/v1/chat/completions", "POST", parse_chat, APIError)
    _accepts("/v1/completions", "POST", parse_completion, APIError)
    _accepts("/generate", "POST", lambda b: parse_generate(b, "v2"), SaxError)
