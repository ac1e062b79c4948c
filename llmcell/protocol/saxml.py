"""Saxml REST wire types (the `sax-http` gateway on port 8888): parse requests, shape replies.

Two dialects exist (see ../shared/reference/saxml-rest.md). v2 (default) answers errors as
`{"detail": message}`; v1 answers HTTP 400 `{"Error": message}`, names the publish key `path`
instead of `model_path`, wraps generate replies in `{"generate_response": ...}` and rejects
requests with missing or extra keys. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SAX_PATH = re.compile(r"^/sax/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
CELL_PATH = re.compile(r"^/sax/[A-Za-z0-9_.-]+$")
GENERATE_DEFAULTS = {"temperature": 0.5, "per_example_max_decode_steps": 128,
                     "per_example_top_k": 200, "per_example_top_p": 0.95}
MAX_REPLICAS = 1024


class SaxError(Exception):
    """A Saxml REST error: HTTP status + message; `body(dialect)` shapes it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def status_for(self, dialect: str) -> int:
        return 400 if dialect == "v1" and self.status < 500 else self.status

    def body(self, dialect: str) -> dict:
        return {"Error": self.message} if dialect == "v1" else {"detail": self.message}


@dataclass(frozen=True)
class Publish:
    model: str
    model_path: str
    checkpoint: str
    replicas: int

    def reply(self, dialect: str) -> dict:
        key = "path" if dialect == "v1" else "model_path"
        return {"model": self.model, key: self.model_path, "checkpoint": self.checkpoint,
                "replicas": self.replicas}

    def to_json(self) -> dict:
        return {"model": self.model, "model_path": self.model_path, "checkpoint": self.checkpoint,
                "replicas": self.replicas}


@dataclass(frozen=True)
class Generate:
    model: str
    query: str
    temperature: float
    max_decode_steps: int
    top_k: int
    top_p: float


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise SaxError(400, "the request body must be a JSON object")
    return body


def _keys(body: dict, required: tuple[str, ...], optional: tuple[str, ...], dialect: str) -> None:
    missing = [k for k in required if k not in body]
    extra = [k for k in body if k not in required + optional]
    expected = ", ".join(required + tuple(f"{k} (optional)" for k in optional))
    if missing:
        raise SaxError(400, f"missing key(s) {missing}; expected keys: {expected}")
    if extra and dialect == "v1":
        raise SaxError(400, f"unexpected key(s) {extra}; expected keys: {expected}")


def model_name(value: Any, key: str = "model") -> str:
    if not isinstance(value, str) or not SAX_PATH.match(value):
        raise SaxError(400, f"'{key}' must be a Sax model path /sax/<cell>/<name>, got {value!r}")
    return value


def _text(body: dict, key: str) -> str:
    value = body[key]
    if not isinstance(value, str) or not value.strip():
        raise SaxError(400, f"'{key}' must be a non-empty string, got {value!r}")
    return value


def parse_publish(body: Any, dialect: str) -> Publish:
    """Publish and update share this shape: model, model_path (v1: path), checkpoint, replicas."""
    body = _object(body)
    path_key = "path" if dialect == "v1" and "path" in body else "model_path"
    _keys(body, ("model", path_key, "checkpoint", "replicas"), (), dialect)
    replicas = body["replicas"]
    if isinstance(replicas, bool) or not isinstance(replicas, int) \
            or not 1 <= replicas <= MAX_REPLICAS:
        raise SaxError(400, f"'replicas' must be an integer in [1, {MAX_REPLICAS}], "
                            f"got {replicas!r}")
    checkpoint = body["checkpoint"]
    if checkpoint is None:
        checkpoint = "None"
    if not isinstance(checkpoint, str) or not checkpoint:
        raise SaxError(400, f"'checkpoint' must be a path or \"None\", got {checkpoint!r}")
    return Publish(model_name(body["model"]), _text(body, path_key), checkpoint, replicas)


def parse_model_only(body: Any, dialect: str) -> str:
    """Unpublish and listcell: `{"model": "/sax/<cell>/<name>"}`."""
    body = _object(body)
    _keys(body, ("model",), (), dialect)
    return model_name(body["model"])


def parse_listall(body: Any, dialect: str) -> str:
    body = _object(body)
    _keys(body, ("sax_cell",), (), dialect)
    cell = body["sax_cell"]
    if not isinstance(cell, str) or not CELL_PATH.match(cell.rstrip("/")):
        raise SaxError(400, f"'sax_cell' must be a Sax cell path /sax/<cell>, got {cell!r}")
    return cell.rstrip("/")


def _number(extra: dict, key: str, lo: float, hi: float, integer: bool) -> float:
    value = extra.get(key, GENERATE_DEFAULTS[key])
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise SaxError(400, f"'extra_inputs.{key}' must be {kind} in [{lo}, {hi}], got {value!r}")
    return value


def parse_generate(body: Any, dialect: str) -> Generate:
    body = _object(body)
    _keys(body, ("model", "query"), ("extra_inputs",), dialect)
    extra = body.get("extra_inputs") or {}
    if not isinstance(extra, dict):
        raise SaxError(400, f"'extra_inputs' must be an object, got {extra!r}")
    unknown = sorted(set(extra) - set(GENERATE_DEFAULTS))
    if unknown:
        raise SaxError(400, f"unknown 'extra_inputs' key(s) {unknown}; allowed: "
                            f"{sorted(GENERATE_DEFAULTS)}")
    return Generate(
        model=model_name(body["model"]), query=_text(body, "query"),
        temperature=_number(extra, "temperature", 0.0, 2.0, False),
        max_decode_steps=int(_number(extra, "per_example_max_decode_steps", 1, 1 << 20, True)),
        top_k=int(_number(extra, "per_example_top_k", 0, 1 << 20, True)),
        top_p=_number(extra, "per_example_top_p", 0.0, 1.0, False))


def generate_reply(samples: list[list], dialect: str) -> Any:
    return {"generate_response": samples} if dialect == "v1" else samples
