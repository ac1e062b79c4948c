"""Wire types of the admin's internal API: what model servers report and what they are told.

A server registers (`ServerInfo`) and then heartbeats with the replicas it holds
(`ReplicaReport`); the admin answers with the replicas it should hold (`Assignment`). The gateway
reads the routing view (`RouteView`). Plain dataclasses with `to_json`/`from_json`; no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

READY, LOADING, FAILED = "ready", "loading", "failed"


class WireError(ValueError):
    """A malformed message on the internal API (the admin answers 400 with this text)."""


def _get(data: Any, key: str, kind: type | tuple[type, ...]):
    if not isinstance(data, dict) or key not in data:
        raise WireError(f"missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise WireError(f"field '{key}' has the wrong type ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class Assignment:
    """One replica a server should hold: the Sax model name, its source and checkpoint."""

    model: str
    model_path: str
    checkpoint: str = "None"
    base: str = ""
    """A LoRA adapter: the model it runs on, held by the same server ("" for a model)."""

    def to_json(self) -> dict:
        out = asdict(self)
        if not self.base:
            del out["base"]
        return out

    @classmethod
    def from_json(cls, data: Any) -> "Assignment":
        base = data.get("base", "") if isinstance(data, dict) else ""
        if not isinstance(base, str):
            raise WireError(f"field 'base' has the wrong type ({type(base).__name__})")
        return cls(_get(data, "model", str), _get(data, "model_path", str),
                   _get(data, "checkpoint", str), base)


@dataclass(frozen=True)
class ReplicaReport:
    """A replica as its server sees it: what it is, its state, and its load."""

    model: str
    model_path: str
    checkpoint: str
    state: str
    error: str = ""
    running: int = 0
    waiting: int = 0
    max_model_len: int = 0
    """The replica's context window in tokens (0 until it is loaded, or when unknown)."""
    slots: int = 0
    """Requests its engine runs at once (its batch size; 0: unknown, an external engine)."""
    kv_usage: float = 0.0
    """Fraction of its KV cache in use (0-1)."""
    base: str = ""
    """A LoRA adapter's base model ("" for a model)."""
    resident: bool = True
    """A LoRA adapter: its weights are loaded in the engine now (requests for it start at
    once; elsewhere they wait for a load)."""

    @property
    def assignment(self) -> Assignment:
        return Assignment(self.model, self.model_path, self.checkpoint, self.base)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "ReplicaReport":
        state = _get(data, "state", str)
        if state not in (READY, LOADING, FAILED):
            raise WireError(f"field 'state' must be one of ready/loading/failed, got {state!r}")
        return cls(_get(data, "model", str), _get(data, "model_path", str),
                   _get(data, "checkpoint", str), state, str(data.get("error", "")),
                   int(data.get("running", 0)), int(data.get("waiting", 0)),
                   int(data.get("max_model_len", 0)), int(data.get("slots", 0)),
                   float(data.get("kv_usage", 0.0)), str(data.get("base", "")),
                   bool(data.get("resident", True)))


@dataclass(frozen=True)
class ServerInfo:
    """A model server (the leader of a group) as it registers with the admin."""

    id: str
    address: str
    engine: str = "builtin"
    memory_bytes: int = 0
    group_size: int = 1
    models: tuple[str, ...] = ("*",)
    """Model sources it can load: "*" for any (builtin), else the fixed one (external engines)."""

    def can_load(self, model_path: str) -> bool:
        return "*" in self.models or model_path in self.models

    def to_json(self) -> dict:
        return dict(asdict(self), models=list(self.models))

    @classmethod
    def from_json(cls, data: Any) -> "ServerInfo":
        memory = _get(data, "memory_bytes", int)
        group = _get(data, "group_size", int)
        models = _get(data, "models", list)
        if memory <= 0:
            raise WireError(f"field 'memory_bytes' must be > 0, got {memory}")
        if group < 1:
            raise WireError(f"field 'group_size' must be >= 1, got {group}")
        address = _get(data, "address", str)
        if not address.startswith(("http://", "https://")):
            raise WireError(f"field 'address' must be an http(s) URL, got {address!r}")
        return cls(_get(data, "id", str), address.rstrip("/"), _get(data, "engine", str), memory,
                   group, tuple(str(m) for m in models) or ("*",))


@dataclass(frozen=True)
class Replica:
    """A serving replica: in the admin's routing view (what its server last reported), and, with
    `outstanding` filled in, in the snapshot a gateway's routing policy chooses from."""

    server_id: str
    """Stable identity (consistent hashing places it on the ring)."""
    address: str
    running: int = 0
    waiting: int = 0
    """Requests waiting at the replica, as its server last reported."""
    max_model_len: int = 0
    slots: int = 0
    """Requests its engine runs at once (0: unknown): the gateway queues beyond them."""
    outstanding: int = 0
    """Requests this gateway has in flight to it (the gateway's own count; not on the wire)."""
    resident: bool | None = None
    """For a LoRA adapter: whether the replica's engine holds its weights now (None: a
    model, not an adapter). The router prefers replicas that do (adapter affinity)."""

    def to_json(self) -> dict:
        out = {"server_id": self.server_id, "address": self.address, "running": self.running,
               "waiting": self.waiting, "max_model_len": self.max_model_len,
               "slots": self.slots}
        if self.resident is not None:
            out["resident"] = self.resident
        return out


@dataclass
class RouteView:
    """Published models and their active replicas, as the gateway routes them."""

    version: int = 0
    models: dict[str, list[Replica]] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    """Each model's checkpoint (what a cached answer was made with)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Each model's `model_path` (the model cards' `root`: where its tokenizer comes from)."""
    cold: list[str] = field(default_factory=list)
    """Models with no ready replica that are getting one (scaled to zero, or moving): a gateway
    holds their requests instead of refusing them."""
    bases: dict[str, str] = field(default_factory=dict)
    """Each LoRA adapter's base model (the model cards' `parent`)."""

    def to_json(self) -> dict:
        return {"version": self.version,
                "models": {m: [r.to_json() for r in rs] for m, rs in self.models.items()},
                "checkpoints": self.checkpoints, "sources": self.sources, "cold": self.cold,
                "bases": self.bases}

    @classmethod
    def from_json(cls, data: Any) -> "RouteView":
        models = _get(data, "models", dict)
        def names(key: str) -> dict[str, str]:
            found = data.get(key, {}) if isinstance(data, dict) else {}
            return {str(m): str(c) for m, c in found.items()} if isinstance(found, dict) else {}

        return cls(_get(data, "version", int),
                   {m: [Replica(**r) for r in rs] for m, rs in models.items()},
                   names("checkpoints"), names("sources"),
                   [str(m) for m in data.get("cold", [])] if isinstance(data.get("cold"), list)
                   else [], names("bases"))
