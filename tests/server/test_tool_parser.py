"""The Hermes tool-call parser on its own: whole answers, streams cut at every character, blocks
that are not calls."""

from __future__ import annotations

import json

from llmcell.server.tool_calls import ToolCallParser, message

NAMES = ["get_weather", "add"]
CALL = '<tool_call>\n{"name":"add","arguments":{"a":1,"b":2}}\n</tool_call>'


def test_whole_answer_calls_and_content():
    msg, failures = message("Sure.\n" + CALL + "\n" + CALL.replace("1", "5"), NAMES)
    assert failures == 0 and msg["content"] == "Sure."
    assert [json.loads(c["function"]["arguments"]) for c in msg["tool_calls"]] == [
        {"a": 1, "b": 2}, {"a": 5, "b": 2}]
    assert len({c["id"] for c in msg["tool_calls"]}) == 2


def test_only_calls_have_no_content():
    msg, _ = message(CALL, NAMES)
    assert msg["content"] is None and len(msg["tool_calls"]) == 1


def test_plain_text_and_lookalikes_stay_content():
    for text in ("no tools here", "a < b and <tool", "x <tool_call>not json</tool_call> y",
                 '<tool_call>{"name":"rm","arguments":{}}</tool_call>'):
        msg, failures = message(text, NAMES)
        assert msg["content"] == text and "tool_calls" not in msg
        assert failures == (1 if "</tool_call>" in text else 0)


def test_unclosed_call_at_the_end_still_parses():
    msg, _ = message(CALL.removesuffix("\n</tool_call>"), NAMES)
    assert msg["tool_calls"][0]["function"]["name"] == "add"


def test_stream_cut_anywhere_gives_the_same():
    text = "Let me check. " + CALL + "\n" + CALL
    for size in (1, 2, 3, 7, 1000):
        parser = ToolCallParser(NAMES)
        content, calls = "", []
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        for k, piece in enumerate(pieces):
            c, new = parser.feed(piece, final=k == len(pieces) - 1)
            content += c
            calls += new
        assert content.strip() == "Let me check." and len(calls) == 2, size
        assert "<" not in content
