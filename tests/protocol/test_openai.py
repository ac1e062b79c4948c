"""OpenAI request parsing: defaults and the ranges checked in one place."""

from __future__ import annotations

import pytest

from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import COMPLETIONS_MAX_TOKENS, parse_sampling


def test_completions_default_to_openais_16_tokens_and_chat_to_the_context():
    assert parse_sampling({}, chat=False).max_tokens == COMPLETIONS_MAX_TOKENS == 16
    assert parse_sampling({}, chat=True).max_tokens is None
    assert parse_sampling({"max_tokens": 99}, chat=False).max_tokens == 99
    assert parse_sampling({"max_completion_tokens": 7, "max_tokens": 99}, chat=True).max_tokens == 7


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty",
                                   "frequency_penalty", "repetition_penalty", "min_p"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_sampling_values_name_the_field(field, value):
    with pytest.raises(APIError) as e:
        parse_sampling({field: value}, chat=True)
    assert e.value.status == 400 and e.value.param == field and field in e.value.message
