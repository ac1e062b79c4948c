"""Tools in the prompt: how a conversation with tools and tool calls reaches the chat template.

A template written for tools (it reads `tools`) gets them as transformers passes them, with each
call's arguments as an object. Any other template gets the tools described in the system message
and past calls written into the assistant's text, both in the Hermes format that the server parses
and the tool grammar enforces (protocol/tools.py).
"""

from __future__ import annotations

import json

from llmcell.protocol.tools import CALL_CLOSE, CALL_OPEN

_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


def template_takes_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template


def _call_text(call: dict) -> str:
    fn = call["function"]
    body = {"name": fn["name"], "arguments": json.loads(fn["arguments"])}
    return f"{CALL_OPEN}\n{json.dumps(body)}\n{CALL_CLOSE}"


def prepare(template: str | None, messages: list[dict], tools: list[dict] | None
            ) -> tuple[list[dict], dict]:
    """(messages, extra template variables) for rendering `messages` with `tools` (OpenAI
    shape; None: no tools offered)."""
    if template_takes_tools(template):
        out = []
        for m in messages:
            if m.get("tool_calls"):
                m = dict(m, tool_calls=[{**c, "function": {
                    "name": c["function"]["name"],
                    "arguments": json.loads(c["function"]["arguments"])}}
                    for c in m["tool_calls"]])
            out.append(m)
        return out, ({"tools": tools} if tools else {})
    out = []
    for m in messages:
        if m.get("tool_calls"):
            text = "\n".join(_call_text(c) for c in m["tool_calls"])
            m = {"role": m["role"], "content": (m["content"] + "\n" if m["content"] else "") + text}
        elif m["role"] == "tool":
            m = {"role": "tool", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
        else:
            m = {"role": m["role"], "content": m["content"]}
        out.append(m)
    if tools:
        described = _INSTRUCTIONS.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{described}"}
        else:
            out.insert(0, {"role": "system", "content": described})
    return out, {}
