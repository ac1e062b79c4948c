"""Endpoint picker metrics: its decisions by model and outcome, how long each took, and the
replicas it picked (by policy), in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from llmcell.metrics.buckets import LATENCY_BUCKETS


class EppMetrics:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("llmcell:epp_requests", "Requests the data plane asked about, by "
                                "model and answer (picked, or the HTTP status it was refused "
                                "with).", ["model", "outcome"], registry=r)
        self.pick_seconds = Histogram("llmcell:epp_decision_seconds", "Time to decide one "
                                      "request (parse, authenticate, route).",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.decisions = Counter("llmcell:epp_routing_decisions", "Replicas picked, by policy "
                                 "and replica.", ["policy", "replica"], registry=r)
        self.kv_routing = Counter("llmcell:epp_kv_routing", "kv_affinity lookups by outcome: "
                                  "cached, uncached, unknown.", ["model", "outcome"], registry=r)

    def decided(self, model: str, outcome: str, replica: str | None, seconds: float) -> None:
        self.requests.labels(model or "unknown", outcome).inc()
        self.pick_seconds.observe(seconds)
        if replica is not None:
            self.decisions.labels(self.policy, replica).inc()
