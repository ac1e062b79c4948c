"""The one reader of JSON request bodies for every llmcell edge (model server, gateway, admin).

Bounded (a declared or streamed size over the limit is a 413 before the body is parsed) and strict:
- a non-empty body must be declared `application/json` (or `...+json`): 415 otherwise, so a web
  page cannot post a form or `text/plain` to a mutating route (cross-site request forgery);
- UTF-8 only; `NaN`, `Infinity` and `-Infinity` are refused (they are not JSON, and a NaN
  sampling value would pass every range check);
- nesting deeper than `MAX_DEPTH` is refused (instead of a RecursionError deep in a handler);
- strings with an unpaired surrogate (`"\\ud800"`) are refused (they cannot be encoded again).
Each API answers in its own error shape: the caller passes `error(status, message, code)`.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.requests import ClientDisconnect, Request

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (OpenAI's bodies need under 10)."""

ErrorFactory = Callable[[int, str, "str | None"], Exception]
_EMPTY = object()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def check_value(value: Any, error: ErrorFactory, max_depth: int = MAX_DEPTH) -> None:
    """Raise `error(400, ...)` when `value` nests deeper than `max_depth` or holds a string with
    an unpaired surrogate; iterative, so a hostile body cannot exhaust the stack."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "body")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise error(400, f"{where} holds an unpaired surrogate (invalid Unicode)",
                            "invalid_request_error") from None
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            raise error(400, f"the request body nests deeper than {max_depth} levels",
                        "invalid_request_error")
        if isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, depth, f"a key in {where}"))
                stack.append((v, depth + 1, f"field {k!r}" if where == "body" else where))
        else:
            stack.extend((v, depth + 1, where) for v in item)


def parse_json(raw: bytes, error: ErrorFactory, max_depth: int = MAX_DEPTH) -> Any:
    """Strictly parse a request body (see the module docstring); errors through `error`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(400, f"the request body is not valid UTF-8 (byte {e.start})",
                    "invalid_request_error") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise error(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno}", "invalid_request_error") from None
    except ValueError as e:  # NaN / Infinity
        raise error(400, f"the request body is not valid JSON: {e}",
                    "invalid_request_error") from None
    except RecursionError:
        raise error(400, f"the request body nests deeper than {max_depth} levels",
                    "invalid_request_error") from None
    # The walk is needed only when the body could hold what it looks for: more brackets than
    # `max_depth` (deep nesting), or a \\u escape of a surrogate (valid UTF-8 has none).
    # Counting bytes runs in C; a usual request skips the walk.
    if (raw.count(b"[") + raw.count(b"{") > max_depth
            or b"\\ud" in raw or b"\\uD" in raw):
        check_value(value, error, max_depth)
    return value


async def read_body(request: Request, limit: int, error: ErrorFactory) -> bytes:
    """The raw body, at most `limit` bytes (413 past it, checked on the declared length first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise error(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                    "request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise error(413, f"request body exceeds the limit of {limit} bytes",
                            "request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise error(400, "the client disconnected while sending the body",
                    "invalid_request_error") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int, error: ErrorFactory, *,
                    empty: Any = _EMPTY, object_only: bool = True) -> Any:
    """The request's JSON body. `empty`: the value of an empty body (by default an empty body is
    an error); `object_only`: the body must be a JSON object."""
    raw = await read_body(request, limit, error)
    if not raw.strip():
        if empty is _EMPTY:
            raise error(400, "the request body is empty; send a JSON object",
                        "invalid_request_error")
        return empty
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        raise error(415, f"the request body must be sent as Content-Type: application/json "
                         f"(got {content_type or 'none'})", "unsupported_media_type")
    value = parse_json(raw, error)
    if object_only and not isinstance(value, dict):
        raise error(400, "the request body must be a JSON object", "invalid_request_error")
    return value
