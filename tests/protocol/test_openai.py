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


def test_a_continuation_is_parsed_and_bad_ones_name_the_field():
    from llmcell.protocol.openai import CONTINUATION, Continuation, parse_chat, parse_completion

    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}],
            "return_token_ids": True, CONTINUATION: {"token_ids": [5, 6], "emitted_chars": 3}}
    req = parse_chat(chat)
    assert req.return_token_ids and req.continuation == Continuation((5, 6), 3)
    for bad in ({"token_ids": [-1], "emitted_chars": 0}, {"token_ids": [1]},
                {"token_ids": [1], "emitted_chars": True}, [1, 2]):
        with pytest.raises(APIError) as e:
            parse_chat(dict(chat, **{CONTINUATION: bad}))
        assert e.value.param.startswith(CONTINUATION), bad
    with pytest.raises(APIError, match="n=1"):
        parse_chat(dict(chat, n=2))
    with pytest.raises(APIError, match="one prompt"):
        parse_completion({"model": "m", "prompt": ["a", "b"],
                          CONTINUATION: {"token_ids": [1], "emitted_chars": 0}})
