"""Replica placement as a pure function: published models + live servers -> what each should hold.

Rules, in order, for each model (by name, so the result is deterministic):
- keep what servers already hold of it (a restarted admin adopts loaded replicas instead of
  reloading them), dropping replicas of unpublished models and extras beyond `replicas`;
- a new checkpoint rolls out one replica at a time: one replica of the new version is placed next
  to the old ones (surge), and an old replica is dropped only once a new one is ready, so the cell
  never has fewer ready replicas than before;
- missing replicas go to distinct servers that can load the source and have the memory free, the
  server with the most free memory first. What does not fit stays pending.
- a LoRA adapter (`base` set) is placed after the models, only on servers that hold its base
  (kept only where the base stays), sized by its own bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcell.protocol.autoscaling import ScalingPolicy
from llmcell.protocol.cell import Assignment


@dataclass(frozen=True)
class ModelSpec:
    model: str
    model_path: str
    checkpoint: str
    replicas: int
    """The replicas it should have now (the autoscaler's count when it is scaled)."""
    memory_bytes: int
    scaling: ScalingPolicy | None = None
    base: str | None = None
    """A LoRA adapter: the published model it runs on (placed only where that model is)."""

    @property
    def assignment(self) -> Assignment:
        return Assignment(self.model, self.model_path, self.checkpoint, self.base or "")


@dataclass(frozen=True)
class Holding:
    assignment: Assignment
    ready: bool
    memory_bytes: int


@dataclass(frozen=True)
class ServerSlot:
    id: str
    memory_bytes: int
    holdings: tuple[Holding, ...] = ()
    models: tuple[str, ...] = ("*",)
    refused: frozenset[Assignment] = frozenset()
    """Assignments this server failed to load; not offered to it again."""

    def can_load(self, model_path: str) -> bool:
        return "*" in self.models or model_path in self.models


def _numbered(server_id: str) -> tuple[str, int]:
    """`cell-model-12` -> ("cell-model-", 12): ids in their numeric order."""
    head = server_id.rstrip("0123456789")
    tail = server_id[len(head):]
    return head, int(tail) if tail else -1


def place(models: list[ModelSpec], servers: list[ServerSlot],
          allow_new: bool = True) -> dict[str, tuple[Assignment, ...]]:
    """Desired assignments per server id. `allow_new=False` only keeps and trims (used while a
    restarted admin waits for servers to report what they already hold)."""
    specs = {m.model: m for m in models}
    kept: dict[str, list[Holding]] = {s.id: [] for s in servers}
    by_model: dict[str, list[tuple[str, Holding]]] = {m: [] for m in specs}
    for s in servers:
        for h in s.holdings:
            if h.assignment.model in specs:
                by_model[h.assignment.model].append((s.id, h))

    order = sorted(specs, key=lambda m: (specs[m].base is not None, m))  # bases first
    free = {s.id: s.memory_bytes for s in servers}

    def has_base(spec: ModelSpec, hs) -> bool:
        return spec.base is None or any(h.assignment.model == spec.base for h in hs)

    for name in order:
        spec = specs[name]
        current = [(sid, h) for sid, h in by_model[name] if h.assignment == spec.assignment]
        old = [(sid, h) for sid, h in by_model[name] if h.assignment != spec.assignment]
        # ready ones are kept first, then the lowest-numbered servers (a LeaderWorkerSet
        # removes its highest-numbered groups first: they are emptied first)
        current.sort(key=lambda x: (not x[1].ready, _numbered(x[0])))
        current = current[:spec.replicas]
        ready_new = sum(h.ready for _, h in current)
        old_ready = [(sid, h) for sid, h in old if h.ready]
        old = old_ready[:max(0, spec.replicas - ready_new)]
        for sid, h in current + old:
            if not has_base(spec, kept[sid]):
                continue
            kept[sid].append(h)
            free[sid] -= h.memory_bytes
    placed = {sid: list(hs) for sid, hs in kept.items()}
    if allow_new:
        by_id = {s.id: s for s in servers}
        for name in order:
            spec = specs[name]
            holders = [sid for sid, hs in placed.items() for h in hs if h.assignment.model == name]
            new = [sid for sid, hs in placed.items() for h in hs
                   if h.assignment == spec.assignment]
            rolling = len(holders) > len(new)
            want = spec.replicas - len(new)
            if rolling:
                loading = any(not h.ready for hs in placed.values() for h in hs
                              if h.assignment == spec.assignment)
                want = 0 if loading else min(want, 1)
            for _ in range(max(0, want)):
                candidates = [sid for sid in placed
                              if sid not in new and by_id[sid].can_load(spec.model_path)
                              and spec.assignment not in by_id[sid].refused
                              and free[sid] >= spec.memory_bytes
                              and has_base(spec, placed[sid])]
                if not candidates:
                    break
                sid = max(candidates, key=lambda s: (s not in holders, free[s], s))
                placed[sid].append(Holding(spec.assignment, False, spec.memory_bytes))
                free[sid] -= spec.memory_bytes
                new.append(sid)
    return {sid: tuple(h.assignment for h in hs) for sid, hs in placed.items()}
