"""Gateway metrics: what clients of the cell experience, recorded at the front door.

`GatewayMetrics` owns its registry (no process-global state). `MetricsMiddleware` (pure ASGI)
stamps each request's start, first body byte and end, and exports requests by route, model and
status, latency and time to first byte (TTFT for streams), errors by type and active streams. The
forwarder adds routing decisions by policy and replica, and retries. Route and model labels are
bounded: unknown paths count as "other" and the model is the one the handler resolved.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import ProcessCollector

from llmcell.metrics.buckets import LATENCY_BUCKETS

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/publish", "/unpublish",
          "/update", "/listcell", "/listall", "/generate", "/health", "/metrics", "/v1/files",
          "/v1/batches")
ERROR_TYPES = {400: "invalid_request", 404: "not_found", 409: "conflict", 413: "too_large",
               422: "invalid_request", 429: "rate_limited", 499: "client_closed",
               502: "replica_failed",
               503: "unavailable", 504: "timeout"}


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path.startswith(("/v1/files/", "/v1/batches/")):
        return "/".join(path.split("/")[:3]) + "/{id}"
    return "other"


class GatewayMetrics:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("llmcell:gateway_requests", "Requests by route, model, status.",
                                ["route", "model", "code"], registry=r)
        self.latency = Histogram("llmcell:gateway_request_latency_seconds",
                                 "End-to-end latency at the gateway (until the last byte).",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llmcell:gateway_time_to_first_token_seconds",
                              "Time to the first streamed byte of a 200 answer, at the gateway.",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("llmcell:gateway_errors", "Error answers by type.", ["type"],
                              registry=r)
        self.retries = Counter("llmcell:gateway_retries", "Requests sent to another replica "
                               "after one failed.", ["model"], registry=r)
        self.resumed = Counter("llmcell:gateway_streams_resumed", "Streams that went on on "
                               "another replica after theirs failed mid-stream.", ["model"],
                               registry=r)
        self.cache = Counter("llmcell:gateway_cache_requests", "Cacheable requests (temperature "
                             "0 or a seed) by outcome: hit or miss.", ["model", "outcome"],
                             registry=r)
        self.cache_bytes = Gauge("llmcell:gateway_cache_bytes", "Bytes of answers in the "
                                 "response cache.", registry=r)
        self.decisions = Counter("llmcell:gateway_routing_decisions",
                                 "Replica choices by policy and replica.", ["policy", "replica"],
                                 registry=r)
        self.kv_routing = Counter("llmcell:gateway_kv_routing", "kv_affinity lookups by "
                                  "outcome: cached (a replica holds part of the prompt), uncached "
                                  "(none does), unknown (no index or tokenizer: routed by prefix "
                                  "hash).", ["model", "outcome"], registry=r)
        self.streams = Gauge("llmcell:gateway_active_streams", "Streaming answers in flight.",
                             registry=r)
        self.queue_depth = Gauge("llmcell:gateway_queue_depth", "Requests waiting at this "
                                 "gateway for a slot, by tenant.", ["tenant"], registry=r)
        self.cold_start = Histogram("llmcell:gateway_cold_start_seconds",
                                    "Time a request was held for a model getting its first "
                                    "replica (scaled to zero) before it was sent.", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("llmcell:gateway_queue_wait_seconds", "Time a request "
                                    "waited for a slot, by tenant.", ["tenant"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.refused = Counter("llmcell:gateway_rate_limited", "Requests refused by a quota or "
                               "the queue, by tenant and limit (requests, tokens, concurrent, "
                               "queue_full, queue_timeout).", ["tenant", "limit"], registry=r)

    def routed(self, model: str, replica: str, attempt: int) -> None:
        self.decisions.labels(self.policy, replica).inc()
        if attempt > 1:
            self.retries.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request through to its last body byte (streams included)."""

    def __init__(self, app, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple, object] = {}
        """Label children by (metric, labels): prometheus_client's `labels()` validates and
        locks on every call; this is on every request's path."""

    def _child(self, metric, *labels: str):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 100_000:  # label sets are bounded, but never unbounded here
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        status = 500
        first: float | None = None
        streaming = False

        async def timed_send(message):
            nonlocal status, first, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                streaming = any(k == b"content-type" and v.startswith(b"text/event-stream")
                                for k, v in message.get("headers") or ())
                if streaming:
                    self.metrics.streams.inc()
            elif message["type"] == "http.response.body" and first is None and message.get("body"):
                first = time.monotonic()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            end = time.monotonic()
            if streaming:
                self.metrics.streams.dec()
            route = route_label(scope["path"])
            state = scope.get("state", {})
            model = state.get("model", "")
            if state.get("stream_broken"):  # a 200 head, then the replica failed mid-stream
                status = 502
            m = self.metrics
            self._child(m.requests, route, model, str(status)).inc()
            if route not in ("/health", "/metrics"):
                self._child(m.latency, route, model).observe(end - start)
            if status == 200 and streaming and first is not None:
                self._child(m.ttft, model).observe(first - start)
            if status >= 400:
                m.errors.labels(ERROR_TYPES.get(status, "server_error" if status >= 500
                                                else "client_error")).inc()
