"""Routing policies, each a pure function of (replicas snapshot, request), chosen by name.

- `round_robin`: the request counter modulo the replicas (sorted by id, so every gateway agrees).
- `least_load`: fewest outstanding requests from this gateway, ties broken by the server-reported
  queue, then by id.
- `prefix_affinity`: consistent hashing with bounded load (Mirrokni, Thorup, Zadimoghaddam 2018).
  Each replica owns `VNODES` points on a 64-bit ring; a request walks clockwise from its prefix
  key to the first replica whose load is under ceil(c * (total + 1) / n). Requests that share a
  prompt prefix land on the replica that already caches it, gateways agree without sharing state,
  and adding a replica moves only ~1/N of the keys.
- `kv_affinity`: the replica whose prefix cache holds the longest run of the prompt's leading
  tokens (`RouteRequest.cached`, from the KV events the servers publish), among those under the
  same bounded-load cap; ties go to the least loaded. When no replica holds any of it, or the
  gateway does not know (no index, a stale one, a model whose tokenizer it lacks), it routes as
  `prefix_affinity` does, so a conversation's first turn lands where its prefix hash points and
  gateways still agree.

Every policy is wrapped in `adapter_affinity`: for a LoRA adapter (replicas that report whether
their engine holds its weights), the policy chooses among the replicas that hold it and are under
the bounded-load cap; when none is, the least-loaded replica gets it (and loads it), as llm-d's
LoRA-affinity scorer does.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from functools import lru_cache, partial
from typing import Callable, Sequence

from llmcell.protocol.cell import Replica
from llmcell.router.protocol import Policy, RouteRequest

VNODES = 64


def _ordered(replicas: Sequence[Replica]) -> list[Replica]:
    return sorted(replicas, key=lambda r: r.server_id)


def round_robin(replicas: Sequence[Replica], request: RouteRequest) -> Replica:
    ordered = _ordered(replicas)
    return ordered[request.seq % len(ordered)]


def least_load(replicas: Sequence[Replica], request: RouteRequest) -> Replica:
    return min(replicas, key=lambda r: (r.outstanding, r.waiting, r.server_id))


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=64)
def _ring(ids: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    points = sorted((hash64(f"{rid}#{v}"), rid) for rid in ids for v in range(VNODES))
    return tuple(p for p, _ in points), tuple(rid for _, rid in points)


def prefix_affinity(replicas: Sequence[Replica], request: RouteRequest,
                    bound: float = 1.25) -> Replica:
    if request.prefix_key is None:
        return least_load(replicas, request)
    by_id = {r.server_id: r for r in replicas}
    points, owners = _ring(tuple(sorted(by_id)))
    total = sum(r.outstanding for r in replicas)
    cap = math.ceil(bound * (total + 1) / len(replicas))
    start = bisect.bisect_left(points, request.prefix_key % (1 << 64))
    seen = set()
    for i in range(len(points)):
        rid = owners[(start + i) % len(points)]
        if rid in seen:
            continue
        seen.add(rid)
        if by_id[rid].outstanding < cap:
            return by_id[rid]
    return least_load(replicas, request)  # unreachable: some replica is always under the cap


def kv_affinity(replicas: Sequence[Replica], request: RouteRequest,
                bound: float = 1.25) -> Replica:
    if not request.cached:
        return prefix_affinity(replicas, request, bound)
    total = sum(r.outstanding for r in replicas)
    cap = math.ceil(bound * (total + 1) / len(replicas))
    under = [r for r in replicas if r.outstanding < cap]
    best = max(request.cached.get(r.server_id, 0) for r in under)
    if best == 0:
        return prefix_affinity(replicas, request, bound)
    return least_load([r for r in under if request.cached.get(r.server_id, 0) == best], request)


POLICIES: dict[str, Callable[[float], Policy]] = {
    "round_robin": lambda bound: round_robin,
    "least_load": lambda bound: least_load,
    "prefix_affinity": lambda bound: partial(prefix_affinity, bound=bound),
    "kv_affinity": lambda bound: partial(kv_affinity, bound=bound),
}


def adapter_affinity(replicas: Sequence[Replica], request: RouteRequest, inner: Policy,
                     bound: float = 1.25) -> Replica:
    if all(r.resident is None for r in replicas):
        return inner(replicas, request)
    total = sum(r.outstanding for r in replicas)
    cap = math.ceil(bound * (total + 1) / len(replicas))
    warm = [r for r in replicas if r.resident and r.outstanding < cap]
    return inner(warm, request) if warm else least_load(replicas, request)


def make_policy(name: str, bounded_load: float = 1.25) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"routing policy {name!r} is not one of {sorted(POLICIES)}")
    return partial(adapter_affinity, inner=POLICIES[name](bounded_load), bound=bounded_load)
