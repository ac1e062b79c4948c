"""The cell as the admin knows it: live servers, what they hold, and the placement plan.

Every event (register, heartbeat, publish, update, unpublish, a server's death) re-runs the pure
placement over the published models and the live servers; each server learns its share in the
reply to its next heartbeat. Times are passed in (monotonic seconds) so tests can drive them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from llmcell.admin.autoscaler import LoadSample
from llmcell.admin.placement import Holding, ModelSpec, ServerSlot, place
from llmcell.admin.scaling import Autoscaling
from llmcell.admin.store import ModelStore
from llmcell.protocol.cell import (FAILED, READY, Assignment, Replica, ReplicaReport, RouteView,
                                   ServerInfo)


class NotFound(KeyError):
    pass


class Conflict(Exception):
    """A registration that would take over another live server's id or address."""


@dataclass
class ServerRecord:
    info: ServerInfo
    last_seen: float
    reports: tuple[ReplicaReport, ...] = ()
    assigned: tuple[Assignment, ...] = ()
    refused: set[Assignment] = field(default_factory=set)
    leaving: bool = False
    """It said it is shutting down (preempted, drained): nothing is placed on it and its
    replicas are placed elsewhere at once, while it finishes what it runs."""

    def report_for(self, a: Assignment) -> ReplicaReport | None:
        return next((r for r in self.reports if r.assignment == a), None)


class CellRegistry:
    def __init__(self, store: ModelStore, dead_after: float, now: float) -> None:
        self.store = store
        self.dead_after = dead_after
        # A restarted admin waits one liveness period for servers to report what they already
        # hold before placing anything new, so nothing is loaded twice.
        self.grace_until = now + dead_after if store.all() else now
        self.servers: dict[str, ServerRecord] = {}
        self.version = 0
        self.dead_events = 0
        self.scaling = Autoscaling()
        self.moved: dict[str, float] = {}
        """Models whose replicas are being placed anew after a server left (when)."""

    # ---- servers -------------------------------------------------------------------------------
    def register(self, info: ServerInfo, reports: tuple[ReplicaReport, ...], now: float) -> None:
        """A server joins (or rejoins after a restart). Conflict when a live server already has
        this id at another address, or this address under another id: a registration never
        takes over a server that still answers its heartbeats."""
        old = self.servers.get(info.id)
        if old is not None and old.info.address != info.address and self._live(old, now):
            raise Conflict(f"server {info.id} is live at {old.info.address}; a registration "
                           f"from {info.address} may not take its id (retry once it is gone)")
        for sid, rec in self.servers.items():
            if sid != info.id and rec.info.address == info.address and self._live(rec, now):
                raise Conflict(f"{info.address} is live as server {sid}; it may not register "
                               f"again as {info.id}")
        self.servers[info.id] = ServerRecord(info, now, reports,
                                             refused=old.refused if old else set())
        self._replan(now)

    def heartbeat(self, server_id: str, reports: tuple[ReplicaReport, ...],
                  now: float) -> tuple[Assignment, ...]:
        rec = self.servers.get(server_id)
        if rec is None:
            raise NotFound(server_id)
        rec.last_seen = now
        changed = [r for r in reports if r.state == FAILED and r.assignment not in rec.refused]
        for r in changed:
            rec.refused.add(r.assignment)
        states = {(r.assignment, r.state) for r in reports}
        if changed or states != {(r.assignment, r.state) for r in rec.reports}:
            rec.reports = reports
            self._replan(now)
        else:
            rec.reports = reports
        return rec.assigned

    def _live(self, rec: ServerRecord, now: float) -> bool:
        return now - rec.last_seen < self.allowance(rec)

    def allowance(self, rec: ServerRecord) -> float:
        """How long a server may be silent before it is declared dead: `dead_after`, doubled
        while its last report had requests in flight (a saturated server's heartbeats may come
        late; one that answers requests is not dead)."""
        busy = any(r.running or r.waiting for r in rec.reports)
        return self.dead_after * (2 if busy else 1)

    def heard_from(self, server_id: str, now: float) -> bool:
        """Whether the server's last heartbeat is within half its allowance."""
        rec = self.servers.get(server_id)
        return rec is not None and now - rec.last_seen < self.allowance(rec) / 2

    def assigned(self, server_id: str) -> tuple[Assignment, ...]:
        return self.servers[server_id].assigned

    def lead(self, now: float) -> None:
        """This admin has just become the leader: forget any servers it knew and wait one
        liveness period for them to report what they hold (nothing is loaded twice)."""
        self.servers.clear()
        self.grace_until = now + self.dead_after
        self.version += 1

    def tick(self, now: float) -> list[str]:
        """Periodic upkeep: drop servers silent for longer than `dead_after` (their replicas get
        re-placed) and re-plan, which places pending replicas once the start-up grace is over."""
        dead = [sid for sid, r in self.servers.items() if now - r.last_seen > self.allowance(r)]
        for sid in dead:
            self.mark_dead(sid, now)
        self.autoscale(now)
        self._replan(now)
        return dead

    # ---- autoscaling ---------------------------------------------------------------------------
    def autoscale(self, now: float, only: str | None = None) -> bool:
        """Sample each scaled model's load and apply the autoscaler's count; True if any
        count changed (the caller re-plans)."""
        changed = False
        for spec in self.store.all():
            if spec.scaling is None or (only is not None and spec.model != only):
                continue
            ready = [r for _, r in self._ready(spec.model)]
            sample = LoadSample(now, len(ready), sum(r.running for r in ready),
                                sum(r.waiting for r in ready),
                                self.scaling.holding(spec.model, now),
                                sum(r.kv_usage for r in ready),
                                max((r.slots for r in ready), default=0))
            d = self.scaling.observe(spec, sample, now)
            if d.desired != spec.replicas:
                self.store.put(replace(spec, replicas=d.desired))
                changed = True
        return changed

    def wake(self, model: str, gateway: str, held: int, now: float) -> None:
        """A gateway holds `held` requests for `model`, which has no ready replica (a LoRA
        adapter's wake its base)."""
        model = self.model(model).base or model  # 404 when not published
        self.scaling.wake(model, gateway, held, now)
        if self.autoscale(now, only=model):
            self._replan(now)

    def leave(self, server_id: str, now: float) -> None:
        """The server is shutting down: place its replicas elsewhere now."""
        rec = self.servers.get(server_id)
        if rec is None:
            raise NotFound(server_id)
        if not rec.leaving:
            rec.leaving = True
            for a in rec.assigned:
                self.moved[a.model] = now
            self._replan(now)

    def cold(self, now: float) -> list[str]:
        """Published models with no ready replica that are getting one (scaled to zero and
        woken, or moving off a server that left): gateways hold their requests meanwhile."""
        out = []
        specs = self.store.all()
        for spec in sorted(specs, key=lambda s: s.base is not None):  # bases first
            if self._ready(spec.model):
                continue
            scaled_to_zero = spec.scaling is not None and spec.scaling.min_replicas == 0
            if scaled_to_zero or now - self.moved.get(spec.model, -1e9) < 60 \
                    or spec.base in out:  # an adapter comes back with its base
                out.append(spec.model)
        return out

    def mark_dead(self, server_id: str, now: float) -> None:
        if self.servers.pop(server_id, None) is not None:
            self.dead_events += 1
            self._replan(now)

    def external_memory(self, model_path: str) -> int | None:
        """Memory of a live server whose external engine serves exactly `model_path` (a vLLM
        group, say): such a model has no file here to size, and a replica takes the group."""
        sizes = [rec.info.memory_bytes for rec in self.servers.values()
                 if "*" not in rec.info.models and model_path in rec.info.models]
        return min(sizes) if sizes else None

    # ---- models --------------------------------------------------------------------------------
    def publish(self, spec: ModelSpec, now: float) -> None:
        self.store.put(spec)
        self._replan(now)

    def adapters_of(self, model: str) -> list[str]:
        return [s.model for s in self.store.all() if s.base == model]

    def unpublish(self, model: str, now: float) -> None:
        if self.adapters_of(model):
            raise Conflict(f"model {model} has LoRA adapters published on it "
                           f"({', '.join(self.adapters_of(model))}); unpublish them first")
        if not self.store.delete(model):
            raise NotFound(model)
        self.scaling.forget(model)
        self._replan(now)

    def model(self, model: str) -> ModelSpec:
        spec = self.store.get(model)
        if spec is None:
            raise NotFound(model)
        return spec

    def active_replicas(self, model: str) -> int:
        return len(self._ready(model))

    def _ready(self, model: str) -> list[tuple[ServerRecord, ReplicaReport]]:
        out = []
        for rec in self.servers.values():
            for r in rec.reports:
                if r.model == model and r.state == READY and r.assignment in rec.assigned:
                    out.append((rec, r))
        return out

    def routes(self, now: float | None = None) -> RouteView:
        models, checkpoints, sources, bases = {}, {}, {}, {}
        for spec in self.store.all():
            models[spec.model] = [Replica(rec.info.id, rec.info.address, r.running, r.waiting,
                                          r.max_model_len, r.slots,
                                          resident=r.resident if spec.base else None)
                                  for rec, r in self._ready(spec.model)]
            checkpoints[spec.model] = spec.checkpoint
            sources[spec.model] = spec.model_path
            if spec.base:
                bases[spec.model] = spec.base
        return RouteView(self.version, models, checkpoints, sources,
                         self.cold(now) if now is not None else [], bases)

    def servers_json(self, now: float) -> list[dict]:
        return [dict(rec.info.to_json(), seconds_since_heartbeat=round(now - rec.last_seen, 3),
                     replicas=[r.to_json() for r in rec.reports],
                     assigned=[a.to_json() for a in rec.assigned])
                for rec in self.servers.values()]

    # ---- placement -----------------------------------------------------------------------------
    def _replan(self, now: float) -> None:
        specs = self.store.all()
        size = {s.assignment: s.memory_bytes for s in specs}
        slots = []
        for rec in self.servers.values():
            if rec.leaving:  # nothing kept or placed there: its replicas go elsewhere
                rec.assigned = ()
                continue
            held = {a for a in rec.assigned}
            held |= {r.assignment for r in rec.reports if r.state != FAILED}
            held -= rec.refused
            holdings = tuple(
                Holding(a, (r := rec.report_for(a)) is not None and r.state == READY,
                        size.get(a, 0))
                for a in sorted(held, key=lambda a: (a.model, a.checkpoint)))
            slots.append(ServerSlot(rec.info.id, rec.info.memory_bytes, holdings,
                                    rec.info.models, frozenset(rec.refused)))
        plan = place(specs, slots, allow_new=now >= self.grace_until)
        for sid, assignments in plan.items():
            self.servers[sid].assigned = assignments
        self.version += 1
