"""Admin metrics and Prometheus service discovery for the whole cell.

`AdminCollector` reads the registry at scrape time: published models, wanted and active replicas
per model, servers by state; and the batch store: batches by status, batch requests answered and
their tokens (counted from the committed results, so they survive a restart). `scrape_targets` answers Prometheus' `http_sd_configs`: the admin
itself, every gateway that follows it (they announce themselves when they read the routing view)
and every model server, labelled by component, server and the models it holds.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from llmcell.protocol.batch import ACTIVE, FINAL


class AdminCollector:
    def __init__(self, registry, batches=None) -> None:
        self.registry = registry
        self.batches = batches

    def collect(self):
        specs = self.registry.store.all()
        published = GaugeMetricFamily("llmcell:published_models", "Models published in the cell.")
        published.add_metric([], len(specs))
        wanted = GaugeMetricFamily("llmcell:model_max_replicas",
                                   "Replicas a published model asks for.", labels=["model"])
        active = GaugeMetricFamily("llmcell:model_active_replicas",
                                   "Replicas of a model ready to serve.", labels=["model"])
        for spec in specs:
            wanted.add_metric([spec.model], spec.replicas)
            active.add_metric([spec.model], self.registry.active_replicas(spec.model))
        servers = GaugeMetricFamily("llmcell:servers", "Model servers by state.",
                                    labels=["state"])
        servers.add_metric(["live"], len(self.registry.servers))
        dead = GaugeMetricFamily("llmcell:servers_declared_dead",
                                 "Servers declared dead since the admin started.")
        dead.add_metric([], self.registry.dead_events)
        desired = GaugeMetricFamily("llmcell:autoscaler_desired_replicas",
                                    "Replicas the autoscaler wants for a scaled model.",
                                    labels=["model"])
        decisions = CounterMetricFamily("llmcell:autoscaler_decisions",
                                        "Replica-count changes the autoscaler made, by kind "
                                        "(up, down, to_zero, from_zero).",
                                        labels=["model", "kind"])
        for spec in specs:
            if spec.scaling is not None:
                desired.add_metric([spec.model], spec.replicas)
        for (model, kind), count in self.registry.scaling.decisions.items():
            decisions.add_metric([model, kind], count)
        yield from (published, wanted, active, servers, dead, desired, decisions)
        if self.batches is not None:
            yield from self._batches()

    def _batches(self):
        by_status = GaugeMetricFamily("llmcell:batches", "Batches by status.", labels=["status"])
        counts = self.batches.counts_by_status()
        for status in (*ACTIVE, *FINAL):
            by_status.add_metric([status], counts.get(status, 0))
        done = CounterMetricFamily("llmcell:batch_requests", "Batch requests answered, by "
                                   "result (failed: an error line).", labels=["result"])
        tokens = CounterMetricFamily("llmcell:batch_tokens", "Tokens (prompt and completion) "
                                     "of answered batch requests.")
        totals = self.batches.totals()
        done.add_metric(["completed"], totals["completed"])
        done.add_metric(["failed"], totals["failed"])
        tokens.add_metric([], totals["tokens"])
        yield from (by_status, done, tokens)


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def scrape_targets(admin: str, gateways: list[str], servers: list[dict]) -> list[dict]:
    """http_sd target groups: [{"targets": ["host:port"], "labels": {...}}]."""
    groups = [{"targets": [_host_port(admin)], "labels": {"component": "admin"}}]
    groups += [{"targets": [_host_port(g)], "labels": {"component": "gateway"}}
               for g in sorted(gateways)]
    for s in sorted(servers, key=lambda s: s["id"]):
        models = sorted({r["model"] for r in s.get("replicas", [])})
        groups.append({"targets": [_host_port(s["address"])],
                       "labels": {"component": "model-server", "server": s["id"],
                                  "model": ",".join(models)}})
    return groups
