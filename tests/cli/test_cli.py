"""The `llmcell` command as a user runs it: a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

CMD = [sys.executable, "-m", "llmcell.cli"]


def run(*args, input_text=None, timeout=120):
    return subprocess.run(CMD + list(args), input=input_text, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("verb", [[], ["generate"], ["chat"]])
def test_help_on_every_verb(verb):
    r = run(*verb, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_generate_answers_the_capital_question():
    r = run("generate", "What is the capital of France?", "--max-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_keeps_the_conversation():
    r = run("chat", "--max-tokens", "16", input_text="What is the capital of France?\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_bad_model_path_is_a_clear_error():
    r = run("generate", "hi", "--model", "/no/such/model.gguf")
    assert r.returncode == 2
    assert "no such file or directory" in r.stderr and "Traceback" not in r.stderr
