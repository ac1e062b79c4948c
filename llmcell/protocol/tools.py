"""Tool calling on the wire: a chat request's `tools`, `tool_choice` and `parallel_tool_calls`,
and the grammar that makes a model call them.

Calls are written in the Hermes format (Qwen2.5, Hermes, SmolLM3 and others are trained on it):
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one block per call. With
`tool_choice` `required` or a named function, guided decoding allows nothing but such blocks, each
naming a given function with arguments that match its schema; with `auto` the model may write text
or calls, and the server parses what it wrote (server/tool_calls.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmcell.protocol.errors import invalid
from llmcell.protocol.guided import MAX_SCHEMA_DEPTH, MAX_SPEC_BYTES, Guided, _depth

MAX_TOOLS = 128
MAX_PARALLEL_CALLS = 8
"""Calls one answer may make when `parallel_tool_calls` is true (a bound for the grammar)."""
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters_json: str
    """The function's parameters as JSON schema text."""

    @property
    def parameters(self) -> dict:
        return json.loads(self.parameters_json)

    def openai(self) -> dict:
        """The tool as the request gave it (what chat templates receive)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[Tool, ...]
    choice: str
    """`auto`, `required`, or `function` (a named one: `name`)."""
    name: str | None = None
    parallel: bool = True

    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def guide(self) -> Guided | None:
        """The grammar that forces calls (`required` or a named function); None for `auto`."""
        if self.choice == "auto":
            return None
        chosen = [t for t in self.tools if self.choice == "required" or t.name == self.name]
        alternatives = " | ".join(f"%json {json.dumps(_call_schema(t))}" for t in chosen)
        several = self.parallel and self.choice == "required"  # a named function: one call
        repeat = f'("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if several else ""
        lark = (f'start: call {repeat}\n'
                f'call: "{CALL_OPEN}\\n" body "\\n{CALL_CLOSE}"\n'
                f'body: {alternatives}\n')
        return Guided("lark", lark, "tool_choice")


def _call_schema(tool: Tool) -> dict:
    return {"type": "object", "x-guidance": {"whitespace_flexible": False},
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def _tool(value: Any, i: int) -> Tool:
    param = f"tools[{i}]"
    if not isinstance(value, dict) or value.get("type") != "function" \
            or not isinstance(value.get("function"), dict):
        raise invalid(f"'{param}' must be {{\"type\": \"function\", \"function\": {{...}}}}",
                      param)
    fn = value["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not all(
            c.isalnum() or c in "_-" for c in name):
        raise invalid(f"'{param}.function.name' must be 1-64 letters, digits, '_' or '-'; got "
                      f"{name!r}", f"{param}.function.name")
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise invalid(f"'{param}.function.description' must be a string",
                      f"{param}.function.description")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    where = f"{param}.function.parameters"
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise invalid(f"'{where}' must be a JSON schema of type object", where)
    _depth(params, MAX_SCHEMA_DEPTH, where)
    text = json.dumps(params)
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise invalid(f"'{where}' is larger than {MAX_SPEC_BYTES} bytes", where)
    return Tool(name, description, text)


def parse_tools(body: dict) -> ToolSet | None:
    """The request's tools and how they must be used; None when there are none or the choice is
    `none` (the model then answers in text and never sees the tools)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    if tools in (None, []):
        if choice not in (None, "none", "auto"):
            raise invalid("'tool_choice' needs 'tools'", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list of functions", "tools")
    if len(tools) > MAX_TOOLS:
        raise invalid(f"'tools' holds {len(tools)} tools; at most {MAX_TOOLS} are allowed",
                      "tools")
    parsed = tuple(_tool(t, i) for i, t in enumerate(tools))
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise invalid("'tools' names a function twice", "tools")
    if choice is None or choice == "auto":
        mode, name = "auto", None
    elif choice == "none":
        return None
    elif choice == "required":
        mode, name = "required", None
    elif isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict):
        mode, name = "function", choice["function"].get("name")
        if name not in names:
            raise invalid(f"'tool_choice' names the function {name!r}, which is not in 'tools' "
                          f"({', '.join(names)})", "tool_choice")
    else:
        raise invalid("'tool_choice' must be none, auto, required or {\"type\": \"function\", "
                      "\"function\": {\"name\": ...}}", "tool_choice")
    return ToolSet(parsed, mode, name, True if parallel is None else parallel)


def tool_call_message(call: Any, where: str) -> dict:
    """One `tool_calls` entry of an assistant message, checked: {id, type, function{name,
    arguments}} with `arguments` as a JSON text."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
            or not isinstance(fn.get("arguments"), str):
        raise invalid(f"'{where}' must be {{\"id\", \"type\": \"function\", \"function\": "
                      f"{{\"name\", \"arguments\"}}}} with arguments as a JSON string", where)
    try:
        json.loads(fn["arguments"])
    except ValueError:
        raise invalid(f"'{where}.function.arguments' is not JSON", where) from None
    return {"id": str(call.get("id") or ""), "type": "function",
            "function": {"name": fn["name"], "arguments": fn["arguments"]}}
