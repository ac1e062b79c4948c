"""The routing contract: a snapshot of replicas and their load in (`protocol.cell.Replica`, with
the gateway's outstanding count), one replica out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from llmcell.protocol.cell import Replica


@dataclass(frozen=True)
class RouteRequest:
    seq: int = 0
    """This gateway's request counter (round robin)."""
    prefix_key: int | None = None
    """Hash of the prompt's leading text after templating (prefix affinity)."""
    cached: Mapping[str, int] | None = None
    """Per replica id, how many of the prompt's leading tokens its prefix cache holds, as the
    gateway's KV index says (kv_affinity); None: not known, route by `prefix_key`."""


class Policy(Protocol):
    def __call__(self, replicas: Sequence[Replica], request: RouteRequest) -> Replica:
        """Pick one of `replicas` (never empty)."""
