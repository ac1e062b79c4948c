"""Typed Kubernetes objects (the subset llmcell renders) and their serialization at the edge.

Builders create these frozen dataclasses; `to_dict` turns them into plain data only when the
manifest is written: snake_case fields become camelCase keys (a trailing `_` is dropped, as in
`from_`), fields left at None are omitted, and a top-level object gets its apiVersion and kind from
its class. Dicts (labels, selectors, free-form CRD blocks) pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar


def _camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        out: dict[str, Any] = {}
        api = getattr(type(obj), "API", None)
        if api:
            out["apiVersion"], out["kind"] = api
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is not None:
                out[_camel(f.name)] = to_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


Labels = dict[str, str]


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str | None = None
    labels: Labels | None = None
    annotations: Labels | None = None


# --- pods -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    value_from: dict | None = None

    @staticmethod
    def field_ref(name: str, path: str) -> "EnvVar":
        return EnvVar(name, value_from={"fieldRef": {"fieldPath": path}})

    @staticmethod
    def secret_ref(name: str, secret: str, key: str) -> "EnvVar":
        return EnvVar(name, value_from={"secretKeyRef": {"name": secret, "key": key,
                                                         "optional": False}})


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class Probe:
    http_get: dict | None = None
    exec_: dict | None = None
    tcp_socket: dict | None = None
    grpc: dict | None = None
    initial_delay_seconds: int | None = None
    period_seconds: int = 10
    timeout_seconds: int = 5
    failure_threshold: int = 3

    @staticmethod
    def http(path: str, port: str, scheme: str = "HTTP", **kw) -> "Probe":
        get = {"path": path, "port": port, **({"scheme": scheme} if scheme != "HTTP" else {})}
        return Probe(http_get=get, **kw)

    @staticmethod
    def grpc_health(port: int, service: str, **kw) -> "Probe":
        return Probe(grpc={"port": port, "service": service}, **kw)

    @staticmethod
    def command(argv: list[str], **kw) -> "Probe":
        return Probe(exec_={"command": argv}, **kw)


@dataclass(frozen=True)
class Resources:
    requests: Labels
    limits: Labels


@dataclass(frozen=True)
class SecurityContext:
    allow_privilege_escalation: bool = False
    read_only_root_filesystem: bool = True
    run_as_non_root: bool = True
    capabilities: dict = field(default_factory=lambda: {"drop": ["ALL"]})


@dataclass(frozen=True)
class PodSecurityContext:
    run_as_non_root: bool = True
    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    seccomp_profile: dict = field(default_factory=lambda: {"type": "RuntimeDefault"})


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    empty_dir: dict | None = None
    secret: dict | None = None
    config_map: dict | None = None
    persistent_volume_claim: dict | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    resources: Resources | None = None
    volume_mounts: list[VolumeMount] | None = None
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    lifecycle: dict | None = None
    security_context: SecurityContext = field(default_factory=SecurityContext)


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    effect: str = "NoSchedule"
    value: str | None = None


@dataclass(frozen=True)
class PodSpec:
    containers: list[Container]
    service_account_name: str | None = None
    node_selector: Labels | None = None
    tolerations: list[Toleration] | None = None
    volumes: list[Volume] | None = None
    termination_grace_period_seconds: int | None = None
    automount_service_account_token: bool | None = None
    security_context: PodSecurityContext = field(default_factory=PodSecurityContext)


@dataclass(frozen=True)
class PodTemplate:
    metadata: ObjectMeta | dict
    spec: PodSpec


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Labels


# --- top-level objects ------------------------------------------------------------------------

@dataclass(frozen=True)
class Namespace:
    API: ClassVar = ("v1", "Namespace")
    metadata: ObjectMeta


@dataclass(frozen=True)
class ServiceAccount:
    API: ClassVar = ("v1", "ServiceAccount")
    metadata: ObjectMeta
    automount_service_account_token: bool = False


@dataclass(frozen=True)
class PolicyRule:
    api_groups: list[str]
    resources: list[str]
    verbs: list[str]


@dataclass(frozen=True)
class Role:
    API: ClassVar = ("rbac.authorization.k8s.io/v1", "Role")
    metadata: ObjectMeta
    rules: list[PolicyRule]


@dataclass(frozen=True)
class RoleBinding:
    API: ClassVar = ("rbac.authorization.k8s.io/v1", "RoleBinding")
    metadata: ObjectMeta
    role_ref: dict
    subjects: list[dict]


@dataclass(frozen=True)
class ConfigMap:
    API: ClassVar = ("v1", "ConfigMap")
    metadata: ObjectMeta
    data: Labels


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: str
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    selector: Labels
    ports: list[ServicePort]
    type: str = "ClusterIP"
    cluster_ip: str | None = None


@dataclass(frozen=True)
class Service:
    API: ClassVar = ("v1", "Service")
    metadata: ObjectMeta
    spec: ServiceSpec


@dataclass(frozen=True)
class StatefulSetSpec:
    selector: LabelSelector
    service_name: str
    template: PodTemplate
    volume_claim_templates: list[dict]
    replicas: int = 1


@dataclass(frozen=True)
class StatefulSet:
    API: ClassVar = ("apps/v1", "StatefulSet")
    metadata: ObjectMeta
    spec: StatefulSetSpec


@dataclass(frozen=True)
class DeploymentSpec:
    replicas: int
    selector: LabelSelector
    template: PodTemplate
    strategy: dict | None = None


@dataclass(frozen=True)
class Deployment:
    API: ClassVar = ("apps/v1", "Deployment")
    metadata: ObjectMeta
    spec: DeploymentSpec


@dataclass(frozen=True)
class LeaderWorkerTemplate:
    size: int
    leader_template: PodTemplate | None
    worker_template: PodTemplate
    restart_policy: str = "RecreateGroupOnPodRestart"


@dataclass(frozen=True)
class LeaderWorkerSetSpec:
    replicas: int
    leader_worker_template: LeaderWorkerTemplate
    startup_policy: str = "LeaderCreated"


@dataclass(frozen=True)
class LeaderWorkerSet:
    API: ClassVar = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    metadata: ObjectMeta
    spec: LeaderWorkerSetSpec


@dataclass(frozen=True)
class _SpecObject:
    """An object whose spec is written as plain data (policy, autoscaling, monitoring, routes)."""
    API: ClassVar[tuple[str, str]]
    metadata: ObjectMeta
    spec: dict


class PodDisruptionBudget(_SpecObject):
    API = ("policy/v1", "PodDisruptionBudget")


class HorizontalPodAutoscaler(_SpecObject):
    API = ("autoscaling/v2", "HorizontalPodAutoscaler")


class ScaledObject(_SpecObject):
    API = ("keda.sh/v1alpha1", "ScaledObject")


class PodMonitoring(_SpecObject):
    API = ("monitoring.googleapis.com/v1", "PodMonitoring")


class ServiceMonitor(_SpecObject):
    API = ("monitoring.coreos.com/v1", "ServiceMonitor")


class PodMonitor(_SpecObject):
    API = ("monitoring.coreos.com/v1", "PodMonitor")


class PrometheusRule(_SpecObject):
    API = ("monitoring.coreos.com/v1", "PrometheusRule")


class NetworkPolicy(_SpecObject):
    API = ("networking.k8s.io/v1", "NetworkPolicy")


class HTTPRoute(_SpecObject):
    API = ("gateway.networking.k8s.io/v1", "HTTPRoute")


class InferencePool(_SpecObject):
    API = ("inference.networking.k8s.io/v1", "InferencePool")


class Certificate(_SpecObject):
    API = ("cert-manager.io/v1", "Certificate")


class ComputeClass(_SpecObject):
    API = ("cloud.google.com/v1", "ComputeClass")


KIND_ORDER = (
    Namespace, ComputeClass, ServiceAccount, Role, RoleBinding, ConfigMap, Certificate, Service,
    StatefulSet,
    Deployment,
    LeaderWorkerSet, PodDisruptionBudget, HorizontalPodAutoscaler, ScaledObject, PodMonitoring,
    ServiceMonitor, PodMonitor, PrometheusRule, NetworkPolicy, HTTPRoute, InferencePool)
"""Objects are written in this order: what others refer to comes before them."""


def in_kind_order(objects: list) -> list:
    rank = {cls: i for i, cls in enumerate(KIND_ORDER)}
    return sorted(objects, key=lambda o: (rank[type(o)], o.metadata.name))
