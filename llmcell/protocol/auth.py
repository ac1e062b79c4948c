"""API keys, tenants and roles: the key format, how a key is hashed, what a key record holds and
what a role may do. No I/O: the admin stores records (admin/keys.py), gateways follow them and
check requests against them (edge/auth.py).

A key is `sk-llmcell-` followed by 43 characters of base64url: 256 bits from `secrets`. It is
shown once, when it is created; what is kept is `key_hash(secret, key)`, an HMAC-SHA256 under the
cell's secret, so neither the admin's store nor the table a gateway holds contains a key.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from llmcell.protocol.cell import WireError
from llmcell.protocol.tenancy import BANDS, check_limit, check_tenant

PREFIX = "sk-llmcell-"
KEY = re.compile(r"^sk-llmcell-[A-Za-z0-9_-]{43}$")
ROLES = ("viewer", "user", "admin")
"""Each role may do what the ones before it may: viewer lists models and reads metrics, user
also runs inference (on the models its key allows), admin also manages models and keys."""
MAX_HEADER = 512
"""The longest `Authorization` header read; a longer one is refused unread."""


def new_key() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def key_hash(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class KeyRecord:
    """One API key as the admin stores it and gateways follow it (the hash, never the key)."""

    id: str
    tenant: str
    role: str
    hash: str
    models: tuple[str, ...] = ()
    """Sax model paths or globs (`/sax/test/*`) the key may use; empty: every model."""
    rpm: int | None = None
    """Requests per window (a minute by default), across the cell (tenancy/ledger.py)."""
    tpm: int | None = None
    """Tokens per window (a minute by default): the prompt plus `max_tokens`, settled to what
    was used."""
    concurrency: int | None = None
    """Requests in flight at once, across the cell."""
    max_priority: str | None = None
    """The highest priority band its requests may ask for (None: any)."""
    created: float = 0.0
    expires: float | None = None
    """Unix time after which the key is refused; None: never."""
    revoked: bool = False

    def active(self, now: float) -> bool:
        return not self.revoked and (self.expires is None or now < self.expires)

    def may_use(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def public(self) -> dict:
        """The record as `keys list` shows it: everything but the hash."""
        data = self.to_json()
        del data["hash"]
        return data

    def to_json(self) -> dict:
        return dict(asdict(self), models=list(self.models))

    @classmethod
    def from_json(cls, data: Any) -> "KeyRecord":
        if not isinstance(data, dict):
            raise WireError("a key record must be an object")
        try:
            record = cls(str(data["id"]), str(data["tenant"]), str(data["role"]),
                         str(data["hash"]), tuple(str(m) for m in data.get("models") or ()),
                         _optional_int(data.get("rpm")), _optional_int(data.get("tpm")),
                         _optional_int(data.get("concurrency")), data.get("max_priority"),
                         float(data.get("created", 0.0)),
                         None if data.get("expires") is None else float(data["expires"]),
                         bool(data.get("revoked", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed key record: {e!r}") from None
        if record.role not in ROLES:
            raise WireError(f"key role {record.role!r} is not one of {ROLES}")
        if record.max_priority not in (None, *BANDS):
            raise WireError(f"key max_priority {record.max_priority!r} is not one of {BANDS}")
        return record


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class KeyRequest:
    """What `keys create` asks for: validated here, the key itself made by the admin."""

    tenant: str
    role: str = "user"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    expires_in: float | None = None
    """Seconds from creation; None: never expires."""
    concurrency: int | None = None
    max_priority: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> "KeyRequest":
        if not isinstance(data, dict):
            raise WireError("the request body must be a JSON object")
        tenant = check_tenant(data.get("tenant"))
        role = data.get("role", "user")
        if role not in ROLES:
            raise WireError(f"'role' must be one of {', '.join(ROLES)}, got {role!r}")
        models = data.get("models") or []
        if not isinstance(models, list) or not all(
                isinstance(m, str) and m.startswith("/sax/") and len(m) < 256 for m in models):
            raise WireError("'models' must be a list of Sax model paths or globs (/sax/cell/*)")
        expires_in = data.get("expires_in")
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(
                expires_in, (int, float)) or not 0 < expires_in < 1e12):
            raise WireError(f"'expires_in' must be a positive number, got {expires_in!r}")
        max_priority = data.get("max_priority")
        if max_priority not in (None, *BANDS):
            raise WireError(f"'max_priority' must be one of {', '.join(BANDS)}, "
                            f"got {max_priority!r}")
        return cls(tenant, role, tuple(models), check_limit("rpm", data.get("rpm")),
                   check_limit("tpm", data.get("tpm")), expires_in,
                   check_limit("concurrency", data.get("concurrency")), max_priority)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header; None when absent. ValueError when it is
    malformed (too long, another scheme, no token)."""
    if header is None:
        return None
    if len(header) > MAX_HEADER:
        raise ValueError(f"the Authorization header is over {MAX_HEADER} characters")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ValueError("the Authorization header must be 'Bearer <key>'")
    return token
