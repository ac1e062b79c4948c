"""Names, labels and pod pieces every rendered component shares.

`Cell` derives object names and label sets from a `RenderConfig` once; builders ask it rather than
formatting names themselves, so a Service and the NetworkPolicy that admits traffic to its pods can
never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcell.config.security import ENV as CELL_TOKEN_ENV
from llmcell.config.deploy import RenderConfig
from llmcell.deploy.k8s import (Container, ContainerPort, EnvVar, ObjectMeta, Probe, Resources,
                                Toleration, Volume, VolumeMount)

ADMIN_PORT = 10000
GATEWAY_PORT = 8888
SERVER_PORT = 8000
VLLM_PORT = 8080
RAY_PORT = 6379
GROUP_PORT = 29500
"""torch.distributed rendezvous port of a built-in engine group (on the leader)."""

SCRATCH = (Volume("tmp", empty_dir={}), VolumeMount("tmp", "/tmp"))
ADAPTERS_PATH = "/adapters"
"""Where LoRA adapter directories are mounted (`render --adapter-pvc`)."""


def adapter_volume(claim: str) -> Volume:
    return Volume("adapters", persistent_volume_claim={"claimName": claim, "readOnly": True})


@dataclass(frozen=True)
class Cell:
    config: RenderConfig

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def name(self, component: str) -> str:
        return f"{self.config.name}-{component}"

    @property
    def gateway_tls_secret(self) -> str | None:
        """The Secret the gateway serves HTTPS with: the one given, or the one cert-manager
        writes for the rendered Certificate; None: plain HTTP."""
        c = self.config
        return c.tls_secret or (self.name("gateway-tls") if c.cert_manager_issuer else None)

    @property
    def cell_secret(self) -> str:
        """The Secret whose key `token` is the cell credential (created by the operator)."""
        return self.config.cell_secret or self.name("cell")

    def credential(self) -> EnvVar:
        """Every llmcell process of the cell reads its credential from the Secret (auth on)."""
        return EnvVar.secret_ref(CELL_TOKEN_ENV, self.cell_secret, "token")

    @property
    def group_set(self) -> str:
        """The LeaderWorkerSet's name: short, as it is part of every pod's DNS name."""
        return self.name("ms")

    def selector(self, component: str) -> dict[str, str]:
        return {"app.kubernetes.io/instance": self.config.name,
                "app.kubernetes.io/component": component}

    def labels(self, component: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": "llmcell", "app.kubernetes.io/part-of": "llmcell",
                "app.kubernetes.io/managed-by": "llmcell-render", **self.selector(component)}

    def meta(self, component: str, name: str | None = None, annotations=None) -> ObjectMeta:
        return ObjectMeta(name or self.name(component), self.namespace, self.labels(component),
                          annotations)

    @property
    def gateway_url(self) -> str:
        scheme = "https" if self.gateway_tls_secret else "http"
        return f"{scheme}://{self.name('gateway')}.{self.namespace}.svc:{GATEWAY_PORT}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.name('admin')}.{self.namespace}.svc:{ADMIN_PORT}"

    @property
    def service_account(self) -> str:
        return self.config.name

    @property
    def monitoring_namespace(self) -> str:
        if self.config.monitoring_namespace:
            return self.config.monitoring_namespace
        return "gmp-system" if self.config.monitoring == "gmp" else "monitoring"

    def spot(self) -> tuple[dict[str, str], list[Toleration]]:
        """Node selector and tolerations that put model servers on spot capacity."""
        if not self.config.spot:
            return {}, []
        if self.config.target == "tke-gpu":
            key, _, value = self.config.spot_label.partition("=")
            return {key: value}, [Toleration(key, operator="Exists")]
        key = "cloud.google.com/gke-spot"
        return {key: "true"}, [Toleration(key, operator="Equal", value="true")]


def pod_env() -> list[EnvVar]:
    return [EnvVar.field_ref("POD_NAME", "metadata.name"),
            EnvVar.field_ref("POD_IP", "status.podIP"),
            EnvVar("HOME", "/tmp")]


def small_resources(cpu: str = "500m", memory: str = "512Mi",
                    cpu_limit: str = "1", memory_limit: str = "1Gi") -> Resources:
    return Resources({"cpu": cpu, "memory": memory}, {"cpu": cpu_limit, "memory": memory_limit})


def http_container(name: str, image: str, args: list[str], port: int, resources: Resources,
                   env: list[EnvVar] | None = None, mounts: list[VolumeMount] | None = None,
                   startup_failures: int | None = None, lifecycle: dict | None = None,
                   ready_path: str = "/health", scheme: str = "HTTP") -> Container:
    """An llmcell process serving /health (and `ready_path`) on `port`, named http."""
    startup = (Probe.http("/health", "http", scheme, period_seconds=10,
                          failure_threshold=startup_failures) if startup_failures else None)
    return Container(
        name=name, image=image, command=["llmcell"], args=args,
        env=pod_env() + (env or []), ports=[ContainerPort(port, "http")], resources=resources,
        volume_mounts=[SCRATCH[1]] + (mounts or []), startup_probe=startup,
        readiness_probe=Probe.http(ready_path, "http", scheme, period_seconds=5),
        liveness_probe=Probe.http("/health", "http", scheme, period_seconds=10,
                                  failure_threshold=6),
        lifecycle=lifecycle)
