"""Who is calling, and may they: the one check every HTTP edge (gateway, admin, model server) puts
in front of its routes.

A request carries `Authorization: Bearer <token>`: an API key (`sk-llmcell-...`, looked up by its
HMAC in a `KeyTable`), or the cell's own credential (what members of the cell use to call each
other). `AuthMiddleware` (pure ASGI, before any route runs) finds the route's rule, identifies
the caller and refuses with 401 (no, malformed, unknown, revoked or expired key) or 403 (a role
or a route it may not use) in the edge's own error shape; the caller is then in
`request.state.principal`, where a route checks the model (`check_model`). An edge built without
an `Authenticator` (auth off: loopback development) has no middleware.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from llmcell.protocol.auth import KEY, ROLES, KeyRecord, bearer, key_hash, role_at_least

OPEN, CELL_ONLY = "open", "cell"
"""Rule levels besides the roles: no credential needed; the cell's credential only."""


class AuthError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: str
    key_id: str | None = None
    record: KeyRecord | None = None
    cell: bool = False
    """The cell's own credential (a gateway, a model server, `llmcell keys` on the cell)."""

    def may_use(self, model: str) -> bool:
        return self.record is None or self.record.may_use(model)


CELL = Principal("cell", "admin", cell=True)


@dataclass(frozen=True)
class KeyTable:
    """Key records by hash, and the secret the hashes are made with."""

    secret: bytes
    by_hash: dict[str, KeyRecord]

    @classmethod
    def of(cls, secret: bytes, records: list[KeyRecord]) -> "KeyTable":
        return cls(secret, {r.hash: r for r in records})

    def find(self, key: str) -> KeyRecord | None:
        digest = key_hash(self.secret, key)
        record = self.by_hash.get(digest)
        return record if record is not None and hmac.compare_digest(record.hash, digest) else None


class Authenticator:
    def __init__(self, cell_token: str | None, keys: Callable[[], KeyTable | None],
                 clock: Callable[[], float] = time.time) -> None:
        """`keys`: the current table (None while none is known yet)."""
        self.cell_token = cell_token
        self.keys = keys
        self.clock = clock

    def identify(self, header: str | None) -> Principal:
        try:
            token = bearer(header)
        except ValueError as e:
            raise AuthError(401, str(e), "invalid_api_key") from None
        if token is None:
            raise AuthError(401, "no API key: send 'Authorization: Bearer <key>'",
                            "invalid_api_key")
        if self.cell_token is not None and hmac.compare_digest(token.encode(),
                                                               self.cell_token.encode()):
            return CELL
        table = self.keys() if KEY.match(token) else None
        record = table.find(token) if table is not None else None
        if record is None:
            raise AuthError(401, "the API key is not valid", "invalid_api_key")
        if record.revoked:
            raise AuthError(401, f"the API key {record.id} has been revoked", "invalid_api_key")
        if not record.active(self.clock()):
            raise AuthError(401, f"the API key {record.id} has expired", "invalid_api_key")
        return Principal(record.tenant, record.role, record.id, record)


Rule = tuple[str, str, str]
"""(method or "*", path or a prefix ending in "*", level: OPEN, CELL_ONLY or a role)."""
ErrorResponse = Callable[[Scope, AuthError], Response]


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, rules: list[Rule],
                 default: str, error: ErrorResponse) -> None:
        for _, _, level in rules:
            if level not in (OPEN, CELL_ONLY, *ROLES):
                raise ValueError(f"auth rule level {level!r} is not one of open, cell, {ROLES}")
        self.app = app
        self.auth = authenticator
        self.rules = rules
        self.default = default
        self.error = error

    def level(self, method: str, path: str) -> str:
        for rule_method, pattern, level in self.rules:
            if rule_method not in ("*", method):
                continue
            if path == pattern or pattern.endswith("*") and path.startswith(pattern[:-1]):
                return level
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        level = self.level(scope["method"], scope["path"])
        if level != OPEN:
            try:
                principal = self.authorize(scope, level)
            except AuthError as e:
                await self.error(scope, e)(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def authorize(self, scope: Scope, level: str) -> Principal:
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"),
                      None)
        principal = self.auth.identify(header)
        if principal.cell:
            return principal
        if level == CELL_ONLY:
            raise AuthError(403, f"{scope['path']} is for the cell's own members (the cell "
                                 "credential), not API keys", "forbidden")
        if not role_at_least(principal.role, level):
            raise AuthError(403, f"{scope['method']} {scope['path']} needs the {level!r} role; "
                                 f"key {principal.key_id} has {principal.role!r}",
                            "insufficient_role")
        return principal


def principal_of(request: Request) -> Principal | None:
    """The authenticated caller (None where auth is off)."""
    return request.scope.get("state", {}).get("principal")


def check_model(request: Request, model: str) -> None:
    """AuthError 403 unless the caller may use `model`."""
    p = principal_of(request)
    if p is not None and not p.may_use(model):
        raise AuthError(403, f"key {p.key_id} may not use the model {model} (it may use: "
                             f"{', '.join(p.record.models)})", "model_not_allowed")
