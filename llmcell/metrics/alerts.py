"""Prometheus alerting rules for a cell, as data (the rule-file `groups` shape).

`llmcell render` wraps them in a PrometheusRule; `alert_rules_yaml()` is a plain rule file for
`promtool check rules` or a hand-run Prometheus. Names follow the metrics the gateway, the admin and
the model servers export (`llmcell:*`).
"""

from __future__ import annotations

import yaml


def alert_rules(latency_slo: float = 20.0, queue_threshold: int = 10) -> dict:
    """Alerts: error rate, p99 latency over the SLO, queue growing, a model with no active replica."""
    requests = "llmcell:gateway_requests_total"
    return {"groups": [{"name": "llmcell", "rules": [
        {"alert": "LlmcellHighErrorRate",
         "expr": (f'sum by (model) (rate({requests}{{code=~"5.."}}[5m]))'
                  f" / sum by (model) (rate({requests}[5m])) > 0.05"),
         "for": "5m", "labels": {"severity": "warning"},
         "annotations": {"summary": "More than 5% of requests to {{ $labels.model }} fail",
                         "description": "5xx ratio at the gateway is {{ $value | humanizePercentage }}"
                                        " over 5 minutes."}},
        {"alert": "LlmcellLatencyP99OverSLO",
         "expr": ("histogram_quantile(0.99, sum by (le, model) "
                  f"(rate(llmcell:gateway_request_latency_seconds_bucket[5m]))) > {latency_slo:g}"),
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": f"p99 latency of {{{{ $labels.model }}}} above {latency_slo:g} s",
                         "description": "p99 end-to-end latency at the gateway is "
                                        "{{ $value | humanizeDuration }}."}},
        {"alert": "LlmcellQueueGrowing",
         "expr": (f"sum by (model_name) (llmcell:num_requests_waiting) > {queue_threshold}"
                  " and sum by (model_name) (deriv(llmcell:num_requests_waiting[10m])) > 0"),
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "Requests for {{ $labels.model_name }} queue up",
                         "description": "{{ $value }} requests wait and the queue keeps growing: "
                                        "add replicas or check the model servers."}},
        {"alert": "LlmcellModelWithoutActiveReplica",
         "expr": "max by (model) (llmcell:model_active_replicas) < 1",
         "for": "2m", "labels": {"severity": "critical"},
         "annotations": {"summary": "Published model {{ $labels.model }} has no active replica",
                         "description": "The admin has the model published but no server holds "
                                        "a ready replica: requests for it fail."}},
    ]}]}


def alert_rules_yaml(latency_slo: float = 20.0) -> str:
    return yaml.safe_dump(alert_rules(latency_slo), sort_keys=False)
