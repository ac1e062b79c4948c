"""Model-server metrics in Prometheus text, named `llmcell:*` after vLLM's `vllm:*` meanings.

Each app owns its registry (no process-global state). Gauges are read from the engine's stats
when scraped; request histograms are derived from the timestamps the engine stamped.
"""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, Histogram, ProcessCollector,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from llmcell.engine.outputs import RequestOutput
from llmcell.metrics.buckets import LATENCY_BUCKETS, TOKEN_BUCKETS


class _EngineCollector:
    def __init__(self, engine, model: str) -> None:
        self.engine = engine
        self.model = model

    def collect(self):
        s = self.engine.stats()
        labels = ["model_name"]

        def family(kind, name, doc, value):
            f = kind(name, doc, labels=labels)
            f.add_metric([self.model], value)
            return f

        def gauge(name, doc, value):
            return family(GaugeMetricFamily, name, doc, value)

        def counter(name, doc, value):
            return family(CounterMetricFamily, name, doc, value)

        yield gauge("llmcell:num_requests_running", "Sequences in the running batch.",
                    s.num_running)
        yield gauge("llmcell:num_requests_waiting", "Sequences waiting for a batch slot.",
                    s.num_waiting)
        yield gauge("llmcell:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0-1).",
                    s.kv_cache_usage)
        yield counter("llmcell:prompt_tokens", "Prompt tokens computed.", s.prompt_tokens)
        yield counter("llmcell:generation_tokens", "Tokens generated.", s.generation_tokens)
        yield counter("llmcell:num_preemptions", "Sequences preempted for KV space.",
                      s.num_preemptions)
        yield counter("llmcell:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                      s.prefix_cache_queries)
        yield counter("llmcell:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                      s.prefix_cache_hits)
        yield from self._adapters(s.adapters)
        device = getattr(getattr(self.engine, "core", None), "device", None)
        if device is not None and device.type == "cuda":
            import torch

            yield gauge("llmcell:accelerator_memory_used_bytes",
                        "Accelerator memory held by this model (allocated by torch).",
                        torch.cuda.memory_allocated(device))
            yield gauge("llmcell:accelerator_memory_total_bytes",
                        "Accelerator memory of the device.",
                        torch.cuda.get_device_properties(device).total_memory)
            try:  # through NVML (the nvidia-ml-py package), when installed
                busy = torch.cuda.utilization(device) / 100.0
            except Exception:  # noqa: BLE001 - no NVML: the gauge is left out
                busy = None
            if busy is not None:
                yield gauge("llmcell:accelerator_utilization",
                            "Fraction of time the accelerator was busy (0-1), from NVML.", busy)


    def _adapters(self, adapters):
        """Per LoRA adapter the engine has run (its requests and tokens are counted under its
        own `model_name` by the request metrics)."""
        if not adapters:
            return
        labels = ["model_name", "adapter"]
        loads = CounterMetricFamily("llmcell:lora_loads", "LoRA adapter loads into the engine.",
                                    labels=labels)
        evictions = CounterMetricFamily("llmcell:lora_evictions", "LoRA adapters evicted from "
                                        "the engine to make room for another.", labels=labels)
        seconds = CounterMetricFamily("llmcell:lora_load_seconds", "Time spent loading LoRA "
                                      "adapters (off the engine's step).", labels=labels)
        resident = GaugeMetricFamily("llmcell:lora_resident", "1 while the adapter's weights "
                                     "are loaded in the engine.", labels=labels)
        for name, n_loads, n_evictions, load_seconds, held in adapters:
            loads.add_metric([self.model, name], n_loads)
            evictions.add_metric([self.model, name], n_evictions)
            seconds.add_metric([self.model, name], load_seconds)
            resident.add_metric([self.model, name], 1.0 if held else 0.0)
        yield from (loads, evictions, seconds, resident)


class _LoadCollector:
    """Load of an external engine (polled from its /metrics), re-exported under llmcell names."""

    def __init__(self, load_fn, model_fn) -> None:
        self.load_fn = load_fn
        self.model_fn = model_fn

    def collect(self):
        load = self.load_fn()
        for name, doc, value in (
                ("llmcell:num_requests_running", "Requests running upstream.", load.running),
                ("llmcell:num_requests_waiting", "Requests waiting upstream.", load.waiting),
                ("llmcell:kv_cache_usage_perc", "Upstream KV-cache usage (0-1).",
                 load.kv_cache_usage)):
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            g.add_metric([self.model_fn()], value)
            yield g


class ServerMetrics:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        if enabled:
            ProcessCollector(registry=r)
        self.ttft = Histogram("llmcell:time_to_first_token_seconds", "Time to first token.",
                              labels, buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("llmcell:time_per_output_token_seconds",
                              "Mean time per output token after the first.", labels,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("llmcell:e2e_request_latency_seconds", "End-to-end request latency.",
                             labels, buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("llmcell:request_queue_time_seconds", "Time waiting to be scheduled.",
                               labels, buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_len = Histogram("llmcell:request_prompt_tokens", "Prompt length per request.",
                                    labels, buckets=TOKEN_BUCKETS, registry=r)
        self.gen_len = Histogram("llmcell:request_generation_tokens", "Output tokens per request.",
                                 labels, buckets=TOKEN_BUCKETS, registry=r)
        self.success = Counter("llmcell:request_success", "Finished requests by finish reason.",
                               labels + ["finished_reason"], registry=r)
        self.http = Counter("llmcell:http_requests", "HTTP requests by route and status.",
                            ["route", "status"], registry=r)
        self.guided = Counter("llmcell:guided_requests", "Requests with guided decoding, by "
                              "kind (json_schema, json_object, regex, choice, grammar, lark: "
                              "forced tool calls).", labels + ["kind"], registry=r)
        self.grammar_compile = Histogram("llmcell:grammar_compile_seconds",
                                         "Time to compile a grammar not yet cached.", labels,
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.grammar_errors = Counter("llmcell:grammar_errors",
                                      "Guided requests refused: their schema or grammar does "
                                      "not compile.", labels, registry=r)
        self.tool_parse_failures = Counter("llmcell:tool_call_parse_failures",
                                           "Tool-call blocks in answers that were not a call of "
                                           "a given function (left in the content).", labels,
                                           registry=r)

    def bind_engine(self, engine, model: str):
        if not self.enabled:
            return None
        collector = _EngineCollector(engine, model)
        self.registry.register(collector)
        return collector

    def bind_load(self, load_fn, model_fn):
        if not self.enabled:
            return None
        collector = _LoadCollector(load_fn, model_fn)
        self.registry.register(collector)
        return collector

    def unbind(self, collector) -> None:
        """Stop exporting a model's gauges (its replica was unloaded)."""
        if collector is not None:
            self.registry.unregister(collector)

    def observe_request(self, model: str, out: RequestOutput) -> None:
        m = out.metrics
        if m is None or not self.enabled:
            return
        if m.first_token is not None:
            self.ttft.labels(model).observe(m.first_token - m.arrival)
        if m.first_scheduled is not None:
            self.queue.labels(model).observe(m.first_scheduled - m.arrival)
        if m.finished is not None:
            self.e2e.labels(model).observe(m.finished - m.arrival)
        n = out.num_generated_tokens
        if n > 1 and m.first_token is not None and m.last_token is not None:
            self.tpot.labels(model).observe((m.last_token - m.first_token) / (n - 1))
        self.prompt_len.labels(model).observe(out.num_prompt_tokens)
        self.gen_len.labels(model).observe(n)
        for o in out.outputs:
            self.success.labels(model, o.finish_reason or "abort").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
