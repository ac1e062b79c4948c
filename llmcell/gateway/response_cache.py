"""The gateway's response cache: exact-match answers to deterministic requests, replayed
without a replica.

- **What is cached:** 200 answers to requests with `temperature` 0 or a `seed`, streams that
  ended with `[DONE]` included (a hit replays the stream event by event).
- **The key:** the tenant, the model and its checkpoint, and the request body in canonical
  form (sorted keys; without `user` and `priority`, which do not change the answer). Tenants
  never share an entry.
- **Bounds:** `max_bytes` in all (least recently used go first) and `ttl` seconds per entry. A
  new checkpoint for the model (Saxml `update`) changes the key, so older answers are never
  served again, and they are dropped at their next lookup.
- **Skipped:** `Cache-Control: no-store` neither reads nor stores; `no-cache` does not read.

Pure code with the clock passed in; the route (gateway/openai_routes.py) does the I/O.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

IGNORED = ("user", "priority")


@dataclass(frozen=True)
class Cached:
    body: bytes
    stream: bool
    tokens: int | None
    """The answer's total tokens (a token quota is charged them on a hit)."""
    model: str
    checkpoint: str
    expires: float


def cacheable(body: dict) -> bool:
    """Deterministic: greedy, or seeded."""
    return body.get("temperature") == 0 or body.get("seed") is not None


def directives(header: str | None) -> set[str]:
    return {part.strip().lower() for part in (header or "").split(",") if part.strip()}


class ResponseCache:
    def __init__(self, max_bytes: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes={max_bytes} must be >= 0 (0: off)")
        if ttl <= 0:
            raise ValueError(f"cache ttl={ttl} must be > 0 seconds")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.entries: OrderedDict[str, Cached] = OrderedDict()
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @staticmethod
    def key(tenant: str, model: str, checkpoint: str, body: dict) -> str:
        canonical = json.dumps({k: v for k, v in body.items() if k not in IGNORED},
                               sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256("\0".join((tenant, model, checkpoint, canonical))
                              .encode()).hexdigest()

    def get(self, key: str, checkpoint: str) -> Cached | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock() or entry.checkpoint != checkpoint:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: str, body: bytes, stream: bool, tokens: int | None, model: str,
            checkpoint: str) -> bool:
        """Store an answer; False when it is larger than the whole cache."""
        if len(body) > self.max_bytes:
            return False
        if key in self.entries:
            self._drop(key)
        self.entries[key] = Cached(body, stream, tokens, model, checkpoint,
                                   self.clock() + self.ttl)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))
        return True

    def _drop(self, key: str) -> None:
        self.bytes -= len(self.entries.pop(key).body)
