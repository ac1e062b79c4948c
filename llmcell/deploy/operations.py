"""Running the cell: autoscaling of model-server groups, monitoring, alerts, Gateway API routes.

- Autoscaling targets the LeaderWorkerSet's scale subresource (whole groups). By default the
  admin owns it (admin/group_scaler.py: one group per replica its autoscaler wants, which can be
  zero); `--autoscaler hpa` or `keda` hand it to Kubernetes instead, on requests waiting per
  leader: an autoscaling/v2 HPA on the Pods metric (GKE's custom-metrics adapter names it
  `prometheus.googleapis.com|llmcell:num_requests_waiting|gauge`), or a KEDA ScaledObject with a
  Prometheus trigger.
- Monitoring: GKE managed Prometheus PodMonitoring, or prometheus-operator ServiceMonitor (admin,
  gateway) + PodMonitor (model servers); a PrometheusRule with the packaged alerts.
- `--gateway-api` routes an existing Gateway to the cell's gateway Service; `--inference-pool` adds
  an InferencePool over the group leaders for the Gateway API inference extension.
"""

from __future__ import annotations

from llmcell.deploy.common import GATEWAY_PORT, SERVER_PORT, Cell
from llmcell.deploy.endpoint_picker import EPP_PORT, GENERATION_PATHS, picker_name
from llmcell.deploy.k8s import (HorizontalPodAutoscaler, HTTPRoute, InferencePool, PodMonitor,
                                PodMonitoring, PrometheusRule, ScaledObject, ServiceMonitor)
from llmcell.metrics.alerts import alert_rules

QUEUE_METRIC = "llmcell:num_requests_waiting"


def _target(cell: Cell) -> dict:
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "name": cell.group_set}


def autoscaling(cell: Cell) -> list:
    c = cell.config
    if c.autoscaler in ("none", "admin"):  # admin: it patches the groups' scale itself
        return []
    meta = cell.meta("model-server", cell.group_set)
    if c.autoscaler == "keda":
        # AverageValue: KEDA divides the cell's total queue by the groups it runs
        query = f'sum({QUEUE_METRIC}{{namespace="{c.namespace}"}})'
        return [ScaledObject(meta, {
            "scaleTargetRef": _target(cell), "minReplicaCount": c.min_replicas,
            "maxReplicaCount": c.max_replicas, "pollingInterval": 15, "cooldownPeriod": 300,
            "triggers": [{"type": "prometheus", "metricType": "AverageValue", "metadata": {
                "serverAddress": c.prometheus_url, "query": query,
                "threshold": str(c.target_waiting)}}]})]
    name = (f"prometheus.googleapis.com|{QUEUE_METRIC}|gauge"
            if c.target.startswith("gke") and c.monitoring == "gmp" else QUEUE_METRIC)
    return [HorizontalPodAutoscaler(meta, {
        "scaleTargetRef": _target(cell), "minReplicas": c.min_replicas,
        "maxReplicas": c.max_replicas,
        "metrics": [{"type": "Pods", "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": str(c.target_waiting)}}}],
        # groups take minutes to load a model: scale up at once, down slowly
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}})]


def monitoring(cell: Cell) -> list:
    c = cell.config
    if c.monitoring == "none":
        return []
    rules = PrometheusRule(cell.meta("monitoring", c.name), alert_rules(c.latency_slo))
    cell_pods = {"app.kubernetes.io/instance": c.name}
    if c.monitoring == "gmp":
        endpoints = [{"port": "http", "path": "/metrics", "interval": "15s"}]
        if c.engine == "vllm":
            endpoints.append({"port": "vllm", "path": "/metrics", "interval": "15s"})
        return [PodMonitoring(cell.meta("monitoring", c.name), {
            "selector": {"matchLabels": cell_pods}, "endpoints": endpoints,
            "targetLabels": {"fromPod": [{"from": "app.kubernetes.io/component",
                                          "to": "component"}]}}), rules]
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "targetLabel": "component"}]
    services = ServiceMonitor(cell.meta("monitoring", c.name), {
        "selector": {"matchLabels": cell_pods, "matchExpressions": [{
            "key": "app.kubernetes.io/component", "operator": "In",
            "values": ["admin", "gateway", "epp"]}]},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s",
                       "relabelings": relabel}]})
    pod_endpoints = [{"port": "http", "path": "/metrics", "interval": "15s",
                      "relabelings": relabel}]
    if c.engine == "vllm":
        pod_endpoints.append({"port": "vllm", "path": "/metrics", "interval": "15s"})
    pods = PodMonitor(cell.meta("monitoring", cell.group_set), {
        "selector": {"matchLabels": cell.selector("model-server")},
        "podMetricsEndpoints": pod_endpoints})
    return [services, pods, rules]


def routes(cell: Cell) -> list:
    c = cell.config
    out = []
    if c.gateway_api:
        rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                  "backendRefs": [{"name": cell.name("gateway"), "port": GATEWAY_PORT}]}]
        if c.inference_pool:  # generation through the pool and its picker; the rest as before
            rules.insert(0, {
                "matches": [{"path": {"type": "Exact", "value": p}} for p in GENERATION_PATHS],
                "backendRefs": [{"group": "inference.networking.k8s.io",
                                 "kind": "InferencePool", "name": cell.group_set}]})
        out.append(HTTPRoute(cell.meta("gateway", c.name), {
            "parentRefs": [{"name": c.gateway_name}], "rules": rules}))
    if c.inference_pool:
        out.append(InferencePool(cell.meta("model-server", cell.group_set), {
            "selector": {"matchLabels": {**cell.selector("model-server"),
                                         "llmcell.dev/role": "leader"}},
            "targetPorts": [{"number": SERVER_PORT}],
            # without the picker a request would reach a server without the cell credential
            "endpointPickerRef": {"name": picker_name(cell), "port": {"number": EPP_PORT},
                                  "failureMode": "FailClose"}}))
    return out
