"""Who may call what on the gateway (with auth on), and how a refusal reads: OpenAI's error body
(`invalid_api_key`, ...) on the OpenAI routes, Saxml's in the caller's dialect on the Saxml ones.
Keys come from the admin's table, which the gateway follows with the routes (gateway/view.py)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from llmcell.edge.auth import OPEN, AuthError
from llmcell.protocol.errors import APIError
from llmcell.protocol.saxml import SaxError

RULES = [
    ("GET", "/health", OPEN),
    ("GET", "/", OPEN),
    ("GET", "/openapi.json", OPEN),
    ("GET", "/metrics", "viewer"),
    ("GET", "/v1/models*", "viewer"),
    ("*", "/listcell", "viewer"),
    ("*", "/listall", "viewer"),
    ("*", "/publish", "admin"),
    ("*", "/update", "admin"),
    ("*", "/unpublish", "admin"),
]
"""The rest (chat, completions, generate) needs the `user` role, and the model's allowance."""
DEFAULT = "user"
SAXML_PATHS = frozenset({"/", "/publish", "/update", "/unpublish", "/listcell", "/listall",
                         "/generate"})


def dialect_of(scope: Scope, default: str) -> str:
    value = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-sax-compat"),
                 default)
    return "v1" if value.lower() == "v1" else "v2"


def auth_error_response(default_dialect: str):
    """The gateway's `AuthError` shaping, for the middleware and the routes' model checks."""
    def respond(scope: Scope, e: AuthError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        if scope["path"] in SAXML_PATHS:
            d = dialect_of(scope, default_dialect)
            err = SaxError(e.status, e.message)
            return JSONResponse(err.body(d), err.status_for(d), headers=headers)
        return JSONResponse(APIError(e.status, e.message, code=e.code).body(), e.status,
                            headers=headers)
    return respond
