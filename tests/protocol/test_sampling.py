"""Sampling parameters: every field's type and range checked in one place (the error names the
field), and the one check of a prompt against a model's vocabulary and context window."""

from __future__ import annotations

import math

import pytest

from llmcell.protocol.openai import parse_chat, parse_completion
from llmcell.protocol.errors import APIError
from llmcell.protocol.saxml import SaxError, parse_generate
from llmcell.protocol.sampling import (ContextLengthError, SamplingError, SamplingParams,
                                       check_request)


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k"), ({"min_p": 1.5}, "min_p"),
    ({"n": 0}, "n"), ({"n": 17}, "n"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"logprobs": 21}, "logprobs"),
    ({"stop": [""]}, "stop"), ({"stop": ["x"] * 17}, "stop"), ({"stop": 5}, "stop"),
    ({"max_tokens": 1.5}, "max_tokens"), ({"temperature": math.nan}, "temperature"),
    ({"top_p": math.inf}, "top_p"), ({"seed": True}, "seed"), ({"top_k": "3"}, "top_k"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"ignore_eos": 1}, "ignore_eos"),
])
def test_invalid_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(SamplingError, match=f"'{field}' ") as e:
        SamplingParams(**kwargs)
    assert e.value.param == field


def test_values_are_normalised():
    p = SamplingParams(stop="END", temperature=1, stop_token_ids=[3, 4])
    assert p.stop == ("END",) and p.stop_token_ids == (3, 4)
    assert isinstance(p.temperature, float)


def test_siblings_get_distinct_seeds():
    p = SamplingParams(n=3, seed=10)
    assert [p.for_sibling(i).seed for i in range(3)] == [10, 11, 12]
    assert p.for_sibling(2).n == 1


def test_check_request_resolves_max_tokens_and_refuses_what_cannot_fit():
    ids = [1, 2, 3]
    assert check_request(ids, SamplingParams(max_tokens=None), 10, 20).max_tokens == 17
    assert check_request(ids, SamplingParams(max_tokens=17), 10, 20).max_tokens == 17
    with pytest.raises(ContextLengthError, match="3 prompt tokens \\+ 18 max_tokens = 21"):
        check_request(ids, SamplingParams(max_tokens=18), 10, 20)
    with pytest.raises(ContextLengthError, match="maximum context length is 3"):
        check_request(ids, SamplingParams(max_tokens=None), 10, 3)  # no room left
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        check_request([1, 10], SamplingParams(), 10, 20)
    with pytest.raises(ValueError, match="empty"):
        check_request([], SamplingParams(), 10, 20)


def _openai_error(parse, body: dict) -> APIError:
    with pytest.raises(APIError) as e:
        parse({"model": "m", **body})
    assert e.value.status == 400
    return e.value


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body,param", [
    ({"temperature": math.nan}, "temperature"), ({"max_completion_tokens": 0},
                                                 "max_completion_tokens"),
    ({"max_tokens": -1}, "max_tokens"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"), ({"stop": [1]}, "stop"), ({"n": 100}, "n"),
])
def test_chat_errors_name_the_field_as_openai_calls_it(body, param):
    error = _openai_error(parse_chat, {**CHAT, **body})
    assert error.param == param and f"'{param}'" in error.message


def test_openai_defaults():
    assert parse_chat(CHAT).sampling.max_tokens is None  # chat: to the end of the context
    completion = parse_completion({"model": "m", "prompt": "hi"}).sampling
    assert completion.max_tokens == 16 and completion.logprobs is None  # OpenAI's defaults
    assert parse_chat({**CHAT, "logprobs": True}).sampling.logprobs == 0
    assert parse_chat({**CHAT, "temperature": None}).sampling.temperature == 1.0  # null: default
    error = _openai_error(parse_completion, {"prompt": "hi", "logprobs": 6})  # OpenAI caps it at 5
    assert error.param == "logprobs"


def test_saxml_extra_inputs_go_through_the_same_checks():
    p = parse_generate({"model": "/sax/c/m", "query": "q",
                        "extra_inputs": {"temperature": 0.0}}, "v2").sampling
    assert (p.temperature, p.max_tokens) == (0.0, 128)
    with pytest.raises(SaxError, match=r"'extra_inputs\.temperature' must be a number in \[0, 2\]"):
        parse_generate({"model": "/sax/c/m", "query": "q", "extra_inputs": {"temperature": 3}},
                       "v2")
