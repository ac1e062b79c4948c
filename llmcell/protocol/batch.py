"""OpenAI's Files and Batch API on the wire: the file and batch objects as the official client
reads them, an input line parsed and checked as the online API checks a request, and the output
and error lines a batch writes.

An input line is `{"custom_id", "method": "POST", "url", "body"}`. A line that does not parse or
fails the online API's checks becomes a line of the error file (with its line number); the rest
of the batch goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import parse_chat, parse_completion

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = {"24h": 86400}
PURPOSES = ("batch",)
"""What a client may upload (outputs are `batch_output`)."""
MAX_METADATA = 16
"""Metadata pairs a batch may carry (OpenAI's limit), keys up to 64 and values up to 512 chars."""
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""Statuses the runner still works on; the others are final."""
FINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class FileObject:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    lines: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes,
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass
class BatchObject:
    id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] | None = None
    times: dict[str, int] = field(default_factory=dict)
    """When it reached each status after the first: `in_progress_at`, `completed_at`, ..."""

    def to_json(self) -> dict:
        out = {"id": self.id, "object": "batch", "endpoint": self.endpoint,
               "errors": {"object": "list", "data": self.errors} if self.errors else None,
               "input_file_id": self.input_file_id,
               "completion_window": self.completion_window, "status": self.status,
               "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
               "created_at": self.created_at, "expires_at": self.expires_at,
               "request_counts": {"total": self.total, "completed": self.completed,
                                  "failed": self.failed},
               "metadata": self.metadata}
        for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                     "expired_at", "cancelling_at", "cancelled_at"):
            out[name] = self.times.get(name)
        return out


def check_create(body: Any) -> tuple[str, str, str, dict[str, str] | None]:
    """`POST /v1/batches`: (input_file_id, endpoint, completion_window, metadata), or a 400
    naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise APIError(400, "input_file_id is required: the id of an uploaded file of purpose "
                            "batch", param="input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise APIError(400, f"endpoint={endpoint!r} is not supported; one of "
                            f"{', '.join(ENDPOINTS)}", param="endpoint",
                       code="invalid_value")
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise APIError(400, f"completion_window={window!r} is not supported; one of "
                            f"{', '.join(COMPLETION_WINDOWS)}", param="completion_window",
                       code="invalid_value")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()):
            raise APIError(400, f"metadata must be an object of at most {MAX_METADATA} string "
                                "pairs (keys up to 64 characters, values up to 512)",
                           param="metadata", code="invalid_value")
    return file_id, endpoint, window, metadata


@dataclass(frozen=True)
class BatchLine:
    line: int
    """1-based, as an editor numbers the input file."""
    custom_id: str
    body: dict
    model: str


@dataclass(frozen=True)
class LineError:
    line: int
    custom_id: str | None
    code: str
    message: str


def parse_line(text: str | bytes, line: int, endpoint: str) -> BatchLine | LineError:
    """One input line, checked as the online API checks its request."""
    try:
        item = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        return LineError(line, None, "invalid_json", f"line {line} is not JSON: {e}")
    if not isinstance(item, dict):
        return LineError(line, None, "invalid_request", f"line {line} is not a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(line, None, "missing_required_parameter",
                         f"line {line} has no custom_id (a non-empty string)")
    if item.get("method", "POST") != "POST":
        return LineError(line, custom_id, "invalid_request",
                         f"line {line}: method={item.get('method')!r}; only POST is supported")
    if item.get("url") != endpoint:
        return LineError(line, custom_id, "invalid_url",
                         f"line {line}: url={item.get('url')!r} is not the batch's endpoint "
                         f"{endpoint}")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError(line, custom_id, "missing_required_parameter",
                         f"line {line} has no body (a JSON object)")
    if body.get("stream"):
        return LineError(line, custom_id, "invalid_request",
                         f"line {line}: stream=true is not available in a batch")
    try:
        req = (parse_chat if endpoint == "/v1/chat/completions" else parse_completion)(body)
    except APIError as e:
        return LineError(line, custom_id, e.code or "invalid_request",
                         f"line {line}: {e.message}")
    return BatchLine(line, custom_id, body, req.model)


def request_id(batch_id: str, line: int) -> str:
    """The same for a line however often the runner restarts (exactly once)."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line}"


def output_line(batch_id: str, line: int, custom_id: str, status: int, body: Any) -> dict:
    """A request that was answered (the output file for 200, the error file otherwise)."""
    rid = request_id(batch_id, line)
    return {"id": rid, "custom_id": custom_id,
            "response": {"status_code": status, "request_id": rid, "body": body},
            "error": None}


def error_line(batch_id: str, e: LineError) -> dict:
    """A line that never became a request (the error file)."""
    return {"id": request_id(batch_id, e.line), "custom_id": e.custom_id, "response": None,
            "error": {"code": e.code, "message": e.message, "line": e.line}}
