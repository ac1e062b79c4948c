"""A tokenizer passed as a spec (server -> gateway) encodes prompts exactly as the original."""

from __future__ import annotations

import json

import pytest

from llmcell.tokenizer.chat_template import ChatTemplateError
from llmcell.tokenizer.prompts import chat_prompt_ids, completion_prompt_ids
from llmcell.tokenizer.tokenizer import Tokenizer

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant. Ünïcödé, emoji 🚀, digits 12345."},
    {"role": "user", "content": "What is   the capital of France?\n\nAnswer in one word."},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? <|im_start|> is not a marker here"},
]


def test_a_spec_encodes_every_prompt_as_the_original(checkpoint):
    tk = checkpoint.tokenizer
    copy = Tokenizer.from_spec(json.loads(json.dumps(tk.to_spec())))
    for n in range(1, len(CONVERSATION) + 1):
        for gen in (True, False):
            assert chat_prompt_ids(copy, CONVERSATION[:n], gen) == \
                chat_prompt_ids(tk, CONVERSATION[:n], gen)
    text = "Once upon a time, 1234 tokens <|im_end|> and\ttabs"
    assert completion_prompt_ids(copy, text) == completion_prompt_ids(tk, text)
    assert completion_prompt_ids(copy, [5, 6, 7]) == [5, 6, 7]
    assert copy.eos_token_ids == tk.eos_token_ids and copy.bos_token == tk.bos_token


def test_a_chat_prompt_ends_with_the_generation_prompt(checkpoint):
    tk = checkpoint.tokenizer
    ids = chat_prompt_ids(tk, CONVERSATION[:2], True)
    assert tk.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    with pytest.raises(ChatTemplateError):
        chat_prompt_ids(tk, [], True)


@pytest.mark.parametrize("spec", [{}, {"tokenizer": "not json"}, {"tokenizer": 3}])
def test_what_is_not_a_spec_is_refused(spec):
    with pytest.raises(ValueError, match="not a tokenizer spec"):
        Tokenizer.from_spec(spec)
