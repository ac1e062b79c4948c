"""The admin's autoscaling bookkeeping: each scaled model's recent load samples, the requests
gateways say they hold for it, and the decisions made (an event log the admin serves at
`/autoscaler/events`, and the metrics). The decisions themselves are admin/autoscaler.py's."""

from __future__ import annotations

import time
from collections import deque

from llmcell.admin.autoscaler import Decision, LoadSample, decide, trim
from llmcell.admin.placement import ModelSpec

HELD_FOR = 3.0
"""Seconds a gateway's count of held requests stands without being renewed."""


class Autoscaling:
    def __init__(self, max_events: int = 256) -> None:
        self.samples: dict[str, list[LoadSample]] = {}
        self.held: dict[str, dict[str, tuple[int, float]]] = {}
        """model -> gateway -> (requests it holds, when it said so)."""
        self.last: dict[str, Decision] = {}
        self.events: deque[dict] = deque(maxlen=max_events)
        self.decisions: dict[tuple[str, str], int] = {}
        """(model, kind of decision) -> how many times it was taken (a counter metric)."""

    def wake(self, model: str, gateway: str, held: int, now: float) -> None:
        self.held.setdefault(model, {})[gateway] = (held, now)

    def holding(self, model: str, now: float) -> int:
        return sum(n for n, at in self.held.get(model, {}).values() if now - at <= HELD_FOR)

    def observe(self, spec: ModelSpec, sample: LoadSample, now: float) -> Decision:
        """Record a sample of `spec`'s load and decide its replica count."""
        samples = self.samples.setdefault(spec.model, [])
        samples.append(sample)
        self.samples[spec.model] = samples = trim(samples, spec.scaling, now)
        d = decide(spec.scaling, samples, spec.replicas, now)
        self.last[spec.model] = d
        if d.desired != spec.replicas:
            kind = ("up" if d.desired > spec.replicas else "down") if d.desired else "to_zero"
            if spec.replicas == 0:
                kind = "from_zero"
            self.decisions[(spec.model, kind)] = self.decisions.get((spec.model, kind), 0) + 1
            self.events.append({"time": time.time(), "model": spec.model,
                                "from": spec.replicas, "to": d.desired, "reason": d.reason})
        return d

    def forget(self, model: str) -> None:
        for table in (self.samples, self.held, self.last):
            table.pop(model, None)
