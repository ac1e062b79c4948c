"""Guided decoding requests: what a request's output must match, read from the OpenAI and vLLM
fields that ask for it, checked for size and depth here, compiled by the engine
(engine/sampling/grammar.py).

Accepted (at most one per request): OpenAI's `response_format` (`json_object`, `json_schema`),
vLLM's `structured_outputs` (`json`, `regex`, `choice`, `grammar`) and its older names
`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmcell.protocol.errors import invalid

MAX_SPEC_BYTES = 64 * 1024
"""Largest schema, regex, grammar or choice list (as JSON text) a request may give."""
MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of objects and lists a JSON schema may have."""
MAX_CHOICES = 256
KINDS = ("json_schema", "json_object", "regex", "choice", "grammar", "lark")
"""`lark` is internal (the tool-calling grammars that the server writes itself)."""


@dataclass(frozen=True)
class Guided:
    kind: str
    spec: str
    """The JSON schema or choice list as JSON text, the regex, or the grammar's source."""
    param: str = "response_format"
    """The request field it came from (errors name it)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"guided decoding kind {self.kind!r} is not one of {KINDS}")


def _depth(value: Any, limit: int, param: str, level: int = 0) -> None:
    if level > limit:
        raise invalid(f"'{param}' is nested deeper than {limit} levels", param)
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, limit, param, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, limit, param, level + 1)


def _sized(text: str, param: str) -> str:
    size = len(text.encode())
    if size > MAX_SPEC_BYTES:
        raise invalid(f"'{param}' is {size} bytes; at most {MAX_SPEC_BYTES} are allowed", param)
    return text


def schema_guide(schema: Any, param: str) -> Guided:
    """A JSON schema (an object, or its JSON text) as a guide; 400 unless it is an object within
    the size and depth limits."""
    if isinstance(schema, str):
        try:
            schema = json.loads(_sized(schema, param))
        except ValueError:
            raise invalid(f"'{param}' must be a JSON schema (an object); the text is not JSON",
                          param) from None
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise invalid(f"'{param}' must be a JSON schema (an object), got "
                      f"{type(schema).__name__}", param)
    _depth(schema, MAX_SCHEMA_DEPTH, param)
    return Guided("json_schema", _sized(json.dumps(schema), param), param)


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"'{param}' must be a non-empty string", param)
    return _sized(value, param)


def _choice(value: Any, param: str) -> Guided:
    if (not isinstance(value, list) or not value
            or not all(isinstance(c, str) and c for c in value)):
        raise invalid(f"'{param}' must be a non-empty list of non-empty strings", param)
    if len(value) > MAX_CHOICES:
        raise invalid(f"'{param}' holds {len(value)} choices; at most {MAX_CHOICES} are allowed",
                      param)
    return Guided("choice", _sized(json.dumps(value), param), param)


def _response_format(value: Any) -> Guided | None:
    param = "response_format"
    if not isinstance(value, dict):
        raise invalid(f"'{param}' must be an object", param)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Guided("json_object", '{"type": "object"}', param)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid(f"'{param}.json_schema' must be an object with a 'schema'",
                          f"{param}.json_schema")
        schema = spec.get("schema", {})
        return schema_guide(schema, f"{param}.json_schema.schema")
    raise invalid(f"'{param}.type' must be one of text, json_object, json_schema; got {kind!r}",
                  f"{param}.type")


def _vllm(name: str, value: Any, param: str) -> Guided:
    if name == "json":
        return schema_guide(value, param)
    if name == "regex":
        return Guided("regex", _string(value, param), param)
    if name == "choice":
        return _choice(value, param)
    return Guided("grammar", _string(value, param), param)


_VLLM = ("json", "regex", "choice", "grammar")


def parse_guided(body: dict) -> Guided | None:
    """The request's guide, or None; a 400 naming the field for anything malformed or for two
    guides in one request."""
    found: list[Guided] = []
    if body.get("response_format") is not None:
        guide = _response_format(body["response_format"])
        if guide is not None:
            found.append(guide)
    outputs = body.get("structured_outputs")
    if outputs is not None:
        if not isinstance(outputs, dict):
            raise invalid("'structured_outputs' must be an object", "structured_outputs")
        for name in _VLLM:
            if outputs.get(name) is not None:
                found.append(_vllm(name, outputs[name], f"structured_outputs.{name}"))
    for name in _VLLM:
        if body.get(f"guided_{name}") is not None:
            found.append(_vllm(name, body[f"guided_{name}"], f"guided_{name}"))
    if len(found) > 1:
        names = ", ".join(f"'{g.param}'" for g in found)
        raise invalid(f"give one output format, not several ({names})", found[1].param)
    return found[0] if found else None
