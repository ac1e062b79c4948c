"""The gateway's public API as an OpenAPI 3.1 document, generated from the wire types: the
sampling ranges (`protocol/sampling.py`), the roles and limits of the OpenAI requests
(`protocol/openai.py`) and the Saxml shapes (`protocol/saxml.py`), so the document cannot drift
from what the parsers accept. Served on the gateway as `/openapi.json`; a fuzzing test feeds it
to schemathesis."""

from __future__ import annotations

from llmcell.protocol.auth import MAX_HEADER
from llmcell.protocol.batch import COMPLETION_WINDOWS, ENDPOINTS, MAX_METADATA
from llmcell.protocol.openai import (CHAT_UNSUPPORTED, COMPLETION_UNSUPPORTED,
                                    COMPLETIONS_MAX_LOGPROBS, MAX_PROMPTS, ROLES, SAMPLING_FIELDS)
from llmcell.protocol.saxml import CELL_PATH, MAX_REPLICAS, SAMPLING_NAMES, SAX_PATH
from llmcell.protocol.sampling import MAX_LOGPROBS, MAX_STOP, RANGES, Range
from llmcell.protocol.tenancy import BANDS, PRIORITY_HEADER


def _number(rule: Range, nullable: bool = True) -> dict:
    schema: dict = {"type": ["integer", "null"] if nullable else "integer"} if rule.integer else \
        {"type": ["number", "null"] if nullable else "number"}
    if rule.lo is not None:
        schema["exclusiveMinimum" if rule.lo_open else "minimum"] = rule.lo
    if rule.hi is not None:
        schema["maximum"] = rule.hi
    return schema


def _sampling(chat: bool) -> dict:
    props = {name: _number(RANGES[name]) for name in SAMPLING_FIELDS if name in RANGES}
    props["stop"] = {"oneOf": [{"type": "string", "minLength": 1},
                               {"type": "array", "items": {"type": "string", "minLength": 1},
                                "maxItems": MAX_STOP}, {"type": "null"}]}
    props["stop_token_ids"] = {"type": ["array", "null"],
                               "items": {"type": "integer", "minimum": 0}}
    props["ignore_eos"] = {"type": ["boolean", "null"]}
    props["max_tokens"] = _number(RANGES["max_tokens"])
    if chat:
        props["max_completion_tokens"] = _number(RANGES["max_tokens"])
        props["logprobs"] = {"type": ["boolean", "null"]}
        props["top_logprobs"] = _number(Range(True, 0, MAX_LOGPROBS))
    else:
        props["logprobs"] = _number(Range(True, 0, COMPLETIONS_MAX_LOGPROBS))
    return props


_STREAM = {"stream": {"type": ["boolean", "null"]},
           "stream_options": {"type": ["object", "null"],
                              "properties": {"include_usage": {"type": ["boolean", "null"]}}},
           "user": {"type": ["string", "null"]}}
_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"enum": [r for r in ROLES if r != "tool"]},
    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}}}
_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}

_ABSENT = {"enum": [None, False, [], {}], "description": "not supported: give no value"}
_SCHEMA = {"type": "object", "description": "a JSON schema"}
RESPONSE_FORMAT = {"oneOf": [
    {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}}},
    {"type": "object", "required": ["type"], "properties": {"type": {"const": "json_object"}}},
    {"type": "object", "required": ["type", "json_schema"], "properties": {
        "type": {"const": "json_schema"},
        "json_schema": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "strict": {"type": ["boolean", "null"]},
            "schema": _SCHEMA}}}},
    {"type": "null"}]}
_FUNCTION = {"type": "object", "required": ["type", "function"], "properties": {
    "type": {"const": "function"},
    "function": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "description": {"type": "string"}, "parameters": _SCHEMA}}}}
_GUIDED = {"guided_json": {"oneOf": [_SCHEMA, {"type": "null"}]},
           "guided_regex": {"type": ["string", "null"], "minLength": 1},
           "guided_choice": {"type": ["array", "null"], "minItems": 1,
                             "items": {"type": "string", "minLength": 1}},
           "guided_grammar": {"type": ["string", "null"], "minLength": 1},
           "response_format": RESPONSE_FORMAT}
_TOOLS = {"tools": {"type": ["array", "null"], "items": _FUNCTION},
          "tool_choice": {"oneOf": [{"enum": ["none", "auto", "required"]}, {
              "type": "object", "required": ["type", "function"], "properties": {
                  "type": {"const": "function"}, "function": {
                      "type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string"}}}}}, {"type": "null"}]},
          "parallel_tool_calls": {"type": ["boolean", "null"]}}

CHAT = {"type": "object", "required": ["model", "messages"], "properties": {
    **{name: _ABSENT for name in CHAT_UNSUPPORTED},
    "model": {"type": "string"}, "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
    "add_generation_prompt": {"type": ["boolean", "null"]}, **_sampling(True), **_STREAM,
    **_GUIDED, **_TOOLS}}
COMPLETION = {"type": "object", "required": ["model", "prompt"], "properties": {
    **{name: _ABSENT for name in COMPLETION_UNSUPPORTED},
    "model": {"type": "string"},
    "prompt": {"oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS,
         "items": {"type": "string", "minLength": 1}},
        _TOKENS, {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": _TOKENS}]},
    "echo": {"type": ["boolean", "null"]}, **_sampling(False), **_STREAM, **_GUIDED}}

_INPUT_ITEM = {"type": "object", "properties": {
    "type": {"enum": ["message", "function_call", "function_call_output"]},
    "role": {"enum": ["user", "assistant", "system", "developer"]},
    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {
        "type": "object", "required": ["type", "text"],
        "properties": {"type": {"enum": ["input_text", "output_text"]},
                       "text": {"type": "string"}}}}]}}}
RESPONSES = {"type": "object", "required": ["model", "input"], "properties": {
    "model": {"type": "string", "minLength": 1},
    "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1,
                                             "items": _INPUT_ITEM}]},
    "instructions": {"type": ["string", "null"]},
    "max_output_tokens": _number(RANGES["max_tokens"]),
    "temperature": _number(RANGES["temperature"]), "top_p": _number(RANGES["top_p"]),
    "stream": {"type": ["boolean", "null"]}, "store": {"type": ["boolean", "null"]},
    "previous_response_id": {"type": ["string", "null"], "minLength": 1},
    "text": {"type": ["object", "null"], "properties": {"format": {"oneOf": [
        {"type": "object", "required": ["type"],
         "properties": {"type": {"enum": ["text", "json_object"]}}},
        {"type": "object", "required": ["type", "schema"], "properties": {
            "type": {"const": "json_schema"}, "name": {"type": "string"},
            "schema": _SCHEMA, "strict": {"type": ["boolean", "null"]}}}]}}},
    "tools": {"type": ["array", "null"], "items": {
        "type": "object", "required": ["type", "name"], "properties": {
            "type": {"const": "function"},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "parameters": _SCHEMA}}}}}

OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
SAXML_ERROR = {"oneOf": [
    {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
    {"type": "object", "required": ["Error"], "properties": {"Error": {"type": "string"}}}]}

_SAX_MODEL = {"type": "string", "pattern": SAX_PATH.pattern}
PUBLISH = {"type": "object", "required": ["model", "model_path", "checkpoint", "replicas"],
           "properties": {"model": _SAX_MODEL, "model_path": {"type": "string", "minLength": 1},
                          "checkpoint": {"type": "string", "minLength": 1},
                          "replicas": {"type": "integer", "minimum": 1,
                                       "maximum": MAX_REPLICAS}}}
MODEL_ONLY = {"type": "object", "required": ["model"], "properties": {"model": _SAX_MODEL}}
LISTALL = {"type": "object", "required": ["sax_cell"],
           "properties": {"sax_cell": {"type": "string", "pattern": CELL_PATH.pattern}}}
_EXTRA = {name: _number(RANGES[field], nullable=False) for name, field in SAMPLING_NAMES.items()}
GENERATE = {"type": "object", "required": ["model", "query"], "properties": {
    "model": _SAX_MODEL, "query": {"type": "string", "minLength": 1},
    "extra_inputs": {"type": "object", "properties": _EXTRA, "additionalProperties": False}}}

BATCH = {"type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
         "properties": {"input_file_id": {"type": "string", "minLength": 1},
                        "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
                        "completion_window": {"type": "string",
                                              "enum": list(COMPLETION_WINDOWS)},
                        "metadata": {"type": ["object", "null"], "maxProperties": MAX_METADATA,
                                     "additionalProperties": {"type": "string",
                                                              "maxLength": 512}}}}


def _operation(summary: str, body: dict | None, error: dict, role: str | None,
               inference: bool = True) -> dict:
    op: dict = {"summary": summary, "responses": {
        "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
        "4XX": {"description": "refused: the body names the field, the limit or the key",
                "content": {"application/json": {"schema": error}}}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    op["security"] = [{"bearer": []}] if role else []
    if role:
        op["x-llmcell-role"] = role
    if role == "user" and inference:  # inference: a priority band, and the key's rate limits on the answer
        op["parameters"] = [{"name": PRIORITY_HEADER, "in": "header", "required": False,
                             "description": "priority band when the model is full (capped by "
                                            "the key's max_priority)",
                             "schema": {"type": "string", "enum": list(BANDS)}}]
        limits = {f"x-ratelimit-{kind}-{what}": {"schema": {"type": "string"}}
                  for kind in ("limit", "remaining", "reset") for what in ("requests", "tokens")}
        op["responses"]["200"]["headers"] = limits
        op["responses"]["429"] = {
            "description": "over a quota, or the model's queue is full",
            "headers": {**limits, "Retry-After": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": error}}}
    return op


def gateway_openapi() -> dict:
    """The gateway's public API (what a caller may send, what an error looks like)."""
    o, s = OPENAI_ERROR, SAXML_ERROR
    paths = {
        "/v1/chat/completions": {"post": _operation("Chat completion", CHAT, o, "user")},
        "/v1/completions": {"post": _operation("Text completion", COMPLETION, o, "user")},
        "/v1/models": {"get": _operation("Models with an active replica", None, o, "viewer")},
        "/v1/responses": {"post": _operation("Create a response (Responses API; also GET and "
                                             "DELETE /v1/responses/{id})", RESPONSES, o,
                                             "user")},
        "/v1/batches": {"post": _operation("Create a batch from an uploaded file (also: "
                                           "/v1/files, /v1/batches/{id}, .../cancel)", BATCH, o,
                                           "user", inference=False),
                        "get": _operation("The caller's batches, newest first", None, o,
                                          "user", inference=False)},
        "/publish": {"post": _operation("Publish a model (Saxml)", PUBLISH, s, "admin")},
        "/update": {"put": _operation("Update a model (Saxml)", PUBLISH, s, "admin")},
        "/unpublish": {"post": _operation("Unpublish a model (Saxml)", MODEL_ONLY, s, "admin")},
        "/listcell": {"post": _operation("A model's replicas (Saxml)", MODEL_ONLY, s, "viewer")},
        "/listall": {"post": _operation("A cell's models (Saxml)", LISTALL, s, "viewer")},
        "/generate": {"post": _operation("Generate (Saxml)", GENERATE, s, "user")},
        "/health": {"get": _operation("Liveness and the routing view", None, o, None)},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "llmcell gateway", "version": "1",
                     "description": "OpenAI API and Saxml REST on one port. Keys are sent as "
                                    f"'Authorization: Bearer <key>' (at most {MAX_HEADER} "
                                    "characters); with auth off they are not needed."},
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
