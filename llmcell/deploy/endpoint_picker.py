"""The endpoint picker on Kubernetes (`llmcell render --inference-pool`): what a Gateway API
inference gateway (GKE Inference Gateway, Envoy Gateway, kgateway, Istio, NGINX Gateway Fabric)
calls to route each request to a model server of the cell's InferencePool.

A Deployment of `llmcell epp` (>= 2 replicas: it keeps no state but its own in-flight counts, so
any number serve at once) behind the Service the InferencePool's `endpointPickerRef` names:
ext_proc on 9002 (gRPC over TLS with a certificate made at start, as these gateways expect; they
encrypt without verifying), the gRPC health service in plaintext on 9003 for the kubelet's
probes, metrics on 9090. It follows the admin, as the cell's gateway does, and needs no access to
the Kubernetes API. With `--gateway-api`, the HTTPRoute sends the OpenAI generation paths to the
InferencePool and everything else to the cell's gateway.
"""

from __future__ import annotations

from llmcell.deploy.common import SCRATCH, Cell, pod_env, small_resources
from llmcell.deploy.k8s import (Container, ContainerPort, Deployment, DeploymentSpec,
                                LabelSelector, ObjectMeta, PodDisruptionBudget, PodSpec,
                                PodTemplate, Probe, Service, ServicePort, ServiceSpec)

EPP_PORT = 9002
EPP_HEALTH_PORT = 9003
EPP_METRICS_PORT = 9090
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
"""What the InferencePool serves through the picker (the rest goes to the cell's gateway)."""


def picker_name(cell: Cell) -> str:
    """The picker's Service: the name the InferencePool's endpointPickerRef gives."""
    return f"{cell.group_set}-epp"


def endpoint_picker(cell: Cell) -> list:
    c = cell.config
    if not c.inference_pool:
        return []
    name = picker_name(cell)
    args = ["epp", "--host", "0.0.0.0", "--port", str(EPP_PORT), "--health-port",
            str(EPP_HEALTH_PORT), "--metrics-port", str(EPP_METRICS_PORT), "--admin",
            cell.admin_url, "--self-signed"]
    if c.policy != "least_load":
        args += ["--policy", c.policy]
    container = Container(
        name="epp", image=c.image, command=["llmcell"], args=args,
        env=pod_env() + [cell.credential()],
        ports=[ContainerPort(EPP_PORT, "grpc"), ContainerPort(EPP_HEALTH_PORT, "grpc-health"),
               ContainerPort(EPP_METRICS_PORT, "http")],
        resources=small_resources("500m", "512Mi", "2", "1Gi"), volume_mounts=[SCRATCH[1]],
        readiness_probe=Probe.grpc_health(EPP_HEALTH_PORT, "readiness", period_seconds=5),
        liveness_probe=Probe.grpc_health(EPP_HEALTH_PORT, "liveness", failure_threshold=6))
    selector = cell.selector("epp")
    pod = PodTemplate(ObjectMeta(name, labels=cell.labels("epp")), PodSpec(
        [container], service_account_name=cell.service_account, volumes=[SCRATCH[0]],
        automount_service_account_token=False, termination_grace_period_seconds=30))
    return [
        Service(cell.meta("epp", name), ServiceSpec(selector, [
            ServicePort("grpc-ext-proc", EPP_PORT, "grpc", app_protocol="http2"),
            ServicePort("grpc-health", EPP_HEALTH_PORT, "grpc-health", app_protocol="http2"),
            ServicePort("http", EPP_METRICS_PORT, "http")])),
        Deployment(cell.meta("epp", name), DeploymentSpec(
            c.gateway_replicas, LabelSelector(selector), pod,
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})),
        PodDisruptionBudget(cell.meta("epp", name), {
            "minAvailable": 1, "selector": {"matchLabels": selector}}),
    ]
