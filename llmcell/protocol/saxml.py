"""Saxml REST wire types (the `sax-http` gateway on port 8888): parse requests, shape replies.

Two dialects exist (see docs/saxml-rest.md). v2 (default) answers errors as
`{"detail": message}`; v1 answers HTTP 400 `{"Error": message}`, names the publish key `path`
instead of `model_path`, wraps generate replies in `{"generate_response": ...}` and rejects
requests with missing or extra keys. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmcell.protocol.autoscaling import ScalingPolicy
from llmcell.protocol.sampling import SamplingError, SamplingParams

SAX_PATH = re.compile(r"^/sax/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
CELL_PATH = re.compile(r"^/sax/[A-Za-z0-9_.-]+$")
GENERATE_DEFAULTS = {"temperature": 0.5, "per_example_max_decode_steps": 128,
                     "per_example_top_k": 200, "per_example_top_p": 0.95}
SAMPLING_NAMES = {"temperature": "temperature", "per_example_max_decode_steps": "max_tokens",
                  "per_example_top_k": "top_k", "per_example_top_p": "top_p"}
"""Saxml's `extra_inputs` keys and the `SamplingParams` fields they set."""
MAX_REPLICAS = 1024


class SaxError(Exception):
    """A Saxml REST error: HTTP status + message; `body(dialect)` shapes it."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        """Sent with the error (Retry-After and the rate-limit headers of a 429)."""

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
    scaling: ScalingPolicy | None = None
    """`autoscaling` (an extra over Saxml's body): `replicas` is then where it starts."""
    base: str | None = None
    """`base` (an extra): `model_path` is a LoRA adapter of this published model."""

    def reply(self, dialect: str) -> dict:
        key = "path" if dialect == "v1" else "model_path"
        out = {"model": self.model, key: self.model_path, "checkpoint": self.checkpoint,
               "replicas": self.replicas}
        if self.scaling is not None:
            out["autoscaling"] = self.scaling.to_json()
        if self.base is not None:
            out["base"] = self.base
        return out

    def to_json(self) -> dict:
        out = {"model": self.model, "model_path": self.model_path, "checkpoint": self.checkpoint,
               "replicas": self.replicas}
        if self.scaling is not None:
            out["autoscaling"] = self.scaling.to_json()
        if self.base is not None:
            out["base"] = self.base
        return out


@dataclass(frozen=True)
class Generate:
    model: str
    query: str
    sampling: SamplingParams


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
    if not isinstance(value, str) or not value:
        raise SaxError(400, f"'{key}' must be a non-empty string, got {value!r}")
    return value


def parse_publish(body: Any, dialect: str) -> Publish:
    """Publish and update share this shape: model, model_path (v1: path), checkpoint, replicas."""
    body = _object(body)
    path_key = "path" if dialect == "v1" and "path" in body else "model_path"
    _keys(body, ("model", path_key, "checkpoint", "replicas"), ("autoscaling", "base"), dialect)
    base = body.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise SaxError(400, f"'base' must name the published model an adapter runs on, got "
                                f"{base!r}")
        base = model_name(base)
    scaling = None
    if body.get("autoscaling") is not None:
        try:
            scaling = ScalingPolicy.from_json(body["autoscaling"])
        except (ValueError, TypeError) as e:
            raise SaxError(400, str(e)) from None
    replicas = body["replicas"]
    lowest = 0 if scaling is not None and scaling.min_replicas == 0 else 1
    if isinstance(replicas, bool) or not isinstance(replicas, int) \
            or not lowest <= replicas <= MAX_REPLICAS:
        raise SaxError(400, f"'replicas' must be an integer in [{lowest}, {MAX_REPLICAS}], "
                            f"got {replicas!r}")
    if scaling is not None:
        replicas = scaling.clamp(replicas)
    checkpoint = body["checkpoint"]
    if checkpoint is None:
        checkpoint = "None"
    if not isinstance(checkpoint, str) or not checkpoint or "\x00" in checkpoint:
        raise SaxError(400, f"'checkpoint' must be a path or \"None\", got {checkpoint!r}")
    source = _text(body, path_key)
    if "\x00" in source:
        raise SaxError(400, f"'{path_key}' must not hold a NUL character, got {source!r}")
    return Publish(model_name(body["model"]), source, checkpoint, replicas, scaling, base)


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
    model, query = model_name(body["model"]), _text(body, "query")
    values = {SAMPLING_NAMES[k]: extra.get(k, default) for k, default in GENERATE_DEFAULTS.items()}
    try:
        return Generate(model, query, SamplingParams(**values))
    except SamplingError as e:
        key = next((k for k, v in SAMPLING_NAMES.items() if v == e.param), e.param)
        raise SaxError(400, f"'extra_inputs.{key}' {e.rule}") from None


def generate_reply(samples: list[list], dialect: str) -> Any:
    return {"generate_response": samples} if dialect == "v1" else samples
