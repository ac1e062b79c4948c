"""Shared fixtures: the default model's checkpoint is loaded once per test session."""

from __future__ import annotations

import pytest

from llmcell.engine.loader import load_checkpoint
from llmcell.tokenizer.chat_template import render_chat

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in one sentence.",
    "List three colors.",
    "How many legs does a spider have?",
]


@pytest.fixture(scope="session")
def checkpoint():
    return load_checkpoint("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def chat_prompt_ids(checkpoint):
    """The five test prompts, chat-templated and tokenized."""
    tk = checkpoint.tokenizer

    def encode(text: str) -> list[int]:
        rendered = render_chat(tk.chat_template, [{"role": "user", "content": text}], True)
        return tk.encode(rendered, add_special_tokens=False)

    return [encode(p) for p in PROMPTS]


@pytest.fixture()
def cell(tmp_path):
    """A cell of real processes on loopback (tests/cell/conftest.py); stopped after the test."""
    from tests.cell.conftest import Cell

    c = Cell(tmp_path)
    yield c
    c.stop()
