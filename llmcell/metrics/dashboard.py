"""The Grafana dashboard for a cell, built as data and written as Grafana's JSON model.

One Prometheus datasource variable; every panel is a time series over `llmcell:*` metrics (and the
process collector's CPU and memory). `llmcell render` ships it in a ConfigMap with the Grafana
sidecar label.
"""

from __future__ import annotations

import json

DS = {"type": "prometheus", "uid": "${datasource}"}


def _quantiles(metric: str, by: str) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[5m])))",
             f"p{int(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.95, 0.99)]


PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests/s by model", "reqps",
     [("sum by (model) (rate(llmcell:gateway_requests_total[5m]))", "{{model}}")]),
    ("Error rate (5xx share at the gateway)", "percentunit",
     [('(sum(rate(llmcell:gateway_requests_total{code=~"5.."}[5m])) or vector(0))'
       " / sum(rate(llmcell:gateway_requests_total[5m]))", "errors")]),
    ("End-to-end latency at the gateway", "s",
     _quantiles("llmcell:gateway_request_latency_seconds", "model")),
    ("Time to first token (model servers)", "s",
     _quantiles("llmcell:time_to_first_token_seconds", "model_name")),
    ("Time per output token (model servers)", "s",
     _quantiles("llmcell:time_per_output_token_seconds", "model_name")),
    ("Tokens/s", "short",
     [("sum by (model_name) (rate(llmcell:generation_tokens_total[1m]))", "generated {{model_name}}"),
      ("sum by (model_name) (rate(llmcell:prompt_tokens_total[1m]))", "prompt {{model_name}}")]),
    ("Requests running and waiting", "short",
     [("sum by (model_name) (llmcell:num_requests_running)", "running {{model_name}}"),
      ("sum by (model_name) (llmcell:num_requests_waiting)", "waiting {{model_name}}")]),
    ("KV-cache usage", "percentunit",
     [("max by (model_name, server) (llmcell:kv_cache_usage_perc)", "{{server}} {{model_name}}")]),
    ("Prefix-cache hits and KV-aware routing", "percentunit",
     [("sum(rate(llmcell:prefix_cache_hits_total[5m]))"
       " / sum(rate(llmcell:prefix_cache_queries_total[5m]))", "prefix-cache hit rate"),
      ("sum by (outcome) (rate(llmcell:gateway_kv_routing_total[5m]))"
       " / scalar(sum(rate(llmcell:gateway_kv_routing_total[5m])))", "kv_affinity {{outcome}}")]),
    ("Replicas per model", "short",
     [("max by (model) (llmcell:model_active_replicas)", "active {{model}}"),
      ("max by (model) (llmcell:model_max_replicas)", "wanted {{model}}")]),
    ("CPU (cores) by component", "short",
     [("sum by (component) (rate(process_cpu_seconds_total{component!=\"\"}[1m]))",
       "{{component}}")]),
    ("Resident memory by component", "bytes",
     [("sum by (component) (process_resident_memory_bytes{component!=\"\"})", "{{component}}")]),
    ("Batches by status", "short",
     [("sum by (status) (llmcell:batches)", "{{status}}")]),
    ("Batch requests/s and tokens/s", "short",
     [("sum by (result) (rate(llmcell:batch_requests_total[5m]))", "requests {{result}}"),
      ("sum(rate(llmcell:batch_tokens_total[5m]))", "tokens")]),
    ("Accelerator memory used", "bytes",
     [("sum by (server) (llmcell:accelerator_memory_used_bytes)", "{{server}}")]),
]


def dashboard() -> dict:
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "datasource": DS, "expr": expr,
                         "legendFormat": legend} for j, (expr, legend) in enumerate(queries)],
        })
    return {
        "title": "llmcell", "uid": "llmcell-cell", "schemaVersion": 39, "version": 1,
        "editable": True, "tags": ["llmcell", "llm"], "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True)
