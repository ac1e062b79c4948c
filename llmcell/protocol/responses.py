"""OpenAI's Responses API on the wire: a `POST /v1/responses` body checked and turned into the
chat completion the gateway runs (any replica, any engine), given the conversation a
`previous_response_id` stored.

Input is a string or a list of items: messages (`input_text` / `output_text` parts), earlier
`function_call`s and their `function_call_output`s. `instructions` become the system message
(they do not carry over to a follow-up, as OpenAI's do not). `text.format` becomes
`response_format`, function tools become chat tools.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llmcell.protocol.errors import invalid

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
PASSED = ("temperature", "top_p", "seed", "parallel_tool_calls", "top_k", "min_p",
          "presence_penalty", "frequency_penalty", "repetition_penalty", "stop")
"""Fields the chat request takes as they are."""
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a response id looks like (ours are `resp_` and 32 hex digits)."""


@dataclass
class ResponsesRequest:
    model: str
    messages: list[dict]
    """This turn's input as chat messages (without instructions)."""
    chat: dict
    """The chat completion body for this turn, without the earlier conversation."""
    previous_response_id: str | None
    store: bool
    stream: bool
    echo: dict
    """Request fields the response object repeats (instructions, tools, text, ...)."""


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"'{where}' must be a string or a list of text parts", where)
    parts = []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text",
                                                                   "text") \
                or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid(f"'{where}[{k}]': only input_text and output_text parts are "
                          f"supported, got {kind!r}", f"{where}[{k}]")
        parts.append(part["text"])
    return "".join(parts)


def _items(value: Any) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("'input' must be a string or a non-empty list of items", "input")
    messages: list[dict] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"'{where}' must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in MESSAGE_ROLES:
                raise invalid(f"'{where}.role' must be one of {', '.join(MESSAGE_ROLES)}; got "
                              f"{role!r}", f"{where}.role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
                raise invalid(f"'{where}' needs call_id, name and arguments (strings)", where)
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise invalid(f"'{where}.call_id' must be a string", f"{where}.call_id")
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise invalid(f"'{where}.type' {kind!r} is not supported (message, function_call, "
                          "function_call_output are)", f"{where}.type")
    return messages


def _format(text: Any) -> dict | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        if not isinstance(text, dict):
            raise invalid("'text' must be an object", "text")
        return None
    if not isinstance(fmt, dict):
        raise invalid("'text.format' must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise invalid("'text.format.schema' must be a JSON schema (an object)",
                          "text.format.schema")
        return {"type": "json_schema", "json_schema": {
            "name": fmt.get("name", "output"), "schema": fmt["schema"],
            "strict": bool(fmt.get("strict", False))}}
    raise invalid(f"'text.format.type' must be text, json_object or json_schema; got {kind!r}",
                  "text.format.type")


def _tools(tools: Any) -> list[dict] | None:
    if tools in (None, []):
        return None
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else type(t).__name__
            raise invalid(f"'tools[{i}]': only function tools are supported, got {kind!r}",
                          f"tools[{i}]")
        fn = {k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def parse_responses(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required", "model")
    for name in ("stream", "store", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid(f"'{name}' must be a boolean", name)
    if body.get("background"):
        raise invalid("'background' is not supported by this server", "background")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str)
                                 or not RESPONSE_ID.fullmatch(previous)):
        raise invalid("'previous_response_id' must be a response id (up to 128 letters, digits, "
                      "'_' or '-')", "previous_response_id")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("'instructions' must be a string", "instructions")
    messages = _items(body.get("input"))
    chat: dict = {"model": model, **{k: body[k] for k in PASSED if body.get(k) is not None}}
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if (fmt := _format(body.get("text"))) is not None:
        chat["response_format"] = fmt
    if (tools := _tools(body.get("tools"))) is not None:
        chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    echo = {"instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "text": body.get("text") or {"format": {"type": "text"}},
            "metadata": body.get("metadata") or {}, "previous_response_id": previous,
            "store": body.get("store", True), "user": body.get("user")}
    return ResponsesRequest(model, messages, chat, previous, body.get("store", True) is not False,
                            bool(body.get("stream")), echo)


def chat_body(req: ResponsesRequest, history: list[dict]) -> dict:
    """The chat completion for this turn: instructions, the stored conversation, this input."""
    system = [{"role": "system", "content": req.echo["instructions"]}] \
        if req.echo["instructions"] else []
    return {**req.chat, "messages": system + history + req.messages}
