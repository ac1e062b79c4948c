"""The model's tool calls read out of its text: Hermes `<tool_call>` blocks (protocol/tools.py)
become OpenAI `tool_calls`, the rest stays the message's content.

`ToolCallParser` reads a stream of text deltas: content passes through as it comes, except a tail
that may be the start of a `<tool_call>` tag; a call leaves as one delta once its block closes. A
block that is not a call of a given function stays content and counts as a parse failure.
"""

from __future__ import annotations

import json
import uuid

from llmcell.protocol.tools import CALL_CLOSE, CALL_OPEN


def _held(text: str) -> int:
    """Length of the longest tail of `text` that begins the opening tag."""
    for k in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return k
    return 0


class ToolCallParser:
    def __init__(self, names: list[str]) -> None:
        self._names = set(names)
        self._buffer = ""
        self._in_call = False
        self.calls: list[dict] = []
        self.failures = 0

    def _call(self, block: str) -> dict | None:
        try:
            data = json.loads(block)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("name") not in self._names:
            return None
        arguments = data.get("arguments", data.get("parameters", {}))
        if not isinstance(arguments, dict):
            return None
        return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": data["name"], "arguments": json.dumps(arguments)}}

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        """(content, new calls) that `text` completes; `final`: nothing follows it."""
        self._buffer += text
        content, calls = [], []
        while True:
            if not self._in_call:
                at = self._buffer.find(CALL_OPEN)
                if at < 0:
                    keep = 0 if final else _held(self._buffer)
                    content.append(self._buffer[:len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep:]
                    break
                content.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(CALL_OPEN):]
                self._in_call = True
            else:
                end = self._buffer.find(CALL_CLOSE)
                if end < 0:
                    if final:  # an unclosed block: a call if it parses, else text
                        self._close(self._buffer, content, calls, closed=False)
                        self._buffer = ""
                    break
                self._close(self._buffer[:end], content, calls, closed=True)
                self._buffer = self._buffer[end + len(CALL_CLOSE):]
                self._in_call = False
        self.calls += calls
        text = "".join(content)
        if self.calls and not text.strip():
            text = ""  # the newlines between calls
        return text, calls

    def _close(self, block: str, content: list[str], calls: list[dict], closed: bool) -> None:
        call = self._call(block.strip())
        if call is not None:
            calls.append(call)
            return
        self.failures += 1
        content.append(CALL_OPEN + block + (CALL_CLOSE if closed else ""))


def delta(index: int, call: dict) -> dict:
    """A call as one streamed `tool_calls` delta."""
    return {"index": index, **call}


def message(text: str, names: list[str]) -> tuple[dict, int]:
    """(the assistant message for a whole answer, parse failures)."""
    parser = ToolCallParser(names)
    content, calls = parser.feed(text, final=True)
    if calls:
        content = content.strip() or None
    msg: dict = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return msg, parser.failures
