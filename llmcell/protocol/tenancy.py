"""Tenancy on the wire: tenants and their limits, priority bands, and the lease exchange by which
the admin shares each limit among the gateways (tenancy/leases.py decides, tenancy/ledger.py
enforces). No I/O.

A *budget* is one limit of one subject: `key:<id>` or `tenant:<name>`, and a resource:
`requests` and `tokens` per window (a minute by default), or `concurrent` requests (a gauge that
never resets). Every limited request is charged to each budget that applies to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmcell.protocol.cell import WireError

BANDS = ("interactive", "batch")
"""Priority bands, highest first: a queued `interactive` request goes before any `batch` one."""
PRIORITY_HEADER = "x-llmcell-priority"
RESOURCES = ("requests", "tokens", "concurrent")
WINDOWED = ("requests", "tokens")
LIMITS = {"rpm": "requests", "tpm": "tokens", "concurrency": "concurrent"}
"""A record's limit fields and the resource each one limits."""
TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def band_of(value: str | None, ceiling: str | None = None) -> str:
    """The band a request runs in: its header's (default interactive), lowered to the key's
    ceiling. ValueError naming the header for a value that is not a band."""
    band = "interactive" if value is None else value.strip().lower()
    if band not in BANDS:
        raise ValueError(f"the {PRIORITY_HEADER} header must be one of {', '.join(BANDS)}, "
                         f"got {value[:40]!r}")
    if ceiling is not None and BANDS.index(band) < BANDS.index(ceiling):
        return ceiling
    return band


def check_limit(name: str, value: Any) -> int | None:
    """A limit as given (None: no limit). WireError naming the field unless a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 0 < value < 1e12:
        raise WireError(f"'{name}' must be a positive integer (below 10^12), got {value!r}")
    return int(value)


def check_tenant(name: Any) -> str:
    if not isinstance(name, str) or not TENANT.fullmatch(name):
        raise WireError("'tenant' must be 1-64 characters of letters, digits, '_', '.', '-'")
    return name


@dataclass(frozen=True)
class TenantRecord:
    """A tenant's own limits (shared by all its keys) and its weight in fair queuing."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    weight: float = 1.0

    def to_json(self) -> dict:
        return {"tenant": self.name, "rpm": self.rpm, "tpm": self.tpm,
                "concurrency": self.concurrency, "weight": self.weight}

    @classmethod
    def from_json(cls, data: Any) -> "TenantRecord":
        if not isinstance(data, dict):
            raise WireError("a tenant must be a JSON object")
        weight = data.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0 < weight <= 1000:
            raise WireError(f"'weight' must be a number in (0, 1000], got {weight!r}")
        return cls(check_tenant(data.get("tenant")), check_limit("rpm", data.get("rpm")),
                   check_limit("tpm", data.get("tpm")),
                   check_limit("concurrency", data.get("concurrency")), float(weight))


@dataclass(frozen=True)
class Budget:
    subject: str
    """`key:<id>` or `tenant:<name>`."""
    resource: str
    limit: int

    @property
    def name(self) -> tuple[str, str]:
        return self.subject, self.resource


def budgets_of(subject: str, record: Any) -> list[Budget]:
    """The budgets a key or tenant record sets (its non-empty limit fields)."""
    return [Budget(subject, resource, getattr(record, field))
            for field, resource in LIMITS.items() if getattr(record, field, None) is not None]


@dataclass(frozen=True)
class Usage:
    """One budget as a gateway reports it: what it admitted in `window`, what it enforces (its
    lease, after handing back what it does not need) and what was asked of it since the last
    report (admitted or not)."""

    subject: str
    resource: str
    window: int
    used: int
    granted: int
    demand: int

    @classmethod
    def from_json(cls, data: Any) -> "Usage":
        if not isinstance(data, dict) or data.get("resource") not in RESOURCES:
            raise WireError(f"a usage entry needs 'resource' in {RESOURCES}")
        try:
            return cls(str(data["subject"]), data["resource"], int(data["window"]),
                       int(data["used"]), int(data["granted"]), max(0, int(data["demand"])))
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed usage entry: {e!r}") from None


@dataclass(frozen=True)
class Grant:
    """The admin's answer for one budget: the gateway's lease for the window, the limit, and
    what the whole cell has left of it (`pool`, for the x-ratelimit-remaining headers)."""

    subject: str
    resource: str
    limit: int
    granted: int
    pool: int

    @classmethod
    def from_json(cls, data: Any) -> "Grant":
        try:
            return cls(str(data["subject"]), str(data["resource"]), int(data["limit"]),
                       int(data["granted"]), int(data["pool"]))
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed grant: {e!r}") from None


@dataclass(frozen=True)
class LeaseReply:
    window: int
    window_seconds: float
    ends_in: float
    """Seconds until the window ends, by the admin's clock (gateways count from when it came)."""
    gateways: int
    grants: tuple[Grant, ...]

    def to_json(self) -> dict:
        return {"window": self.window, "window_seconds": self.window_seconds,
                "ends_in": self.ends_in, "gateways": self.gateways,
                "grants": [g.__dict__ for g in self.grants]}

    @classmethod
    def from_json(cls, data: Any) -> "LeaseReply":
        if not isinstance(data, dict) or not isinstance(data.get("grants"), list):
            raise WireError("a lease reply needs a 'grants' list")
        try:
            return cls(int(data["window"]), float(data["window_seconds"]),
                       float(data["ends_in"]), int(data["gateways"]),
                       tuple(Grant.from_json(g) for g in data["grants"]))
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed lease reply: {e!r}") from None
