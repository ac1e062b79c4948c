"""The routing contract: a snapshot of replicas and their load in, one replica out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class ReplicaLoad:
    id: str
    """Stable replica identity (the server id); consistent hashing places it on the ring."""
    address: str
    outstanding: int = 0
    """Requests this gateway has in flight to the replica."""
    queue: int = 0
    """Requests waiting at the replica, as its server last reported."""


@dataclass(frozen=True)
class RouteRequest:
    seq: int = 0
    """This gateway's request counter (round robin)."""
    prefix_key: int | None = None
    """Hash of the prompt's leading text after templating (prefix affinity)."""


class Policy(Protocol):
    def __call__(self, replicas: Sequence[ReplicaLoad], request: RouteRequest) -> ReplicaLoad:
        """Pick one of `replicas` (never empty)."""
