"""Deployment configuration: what `llmcell plan` sizes and what `llmcell render` writes.

`PlanConfig` describes a model (a file on disk, a built-in alias, or a bare parameter count with an
optional shape), its weight dtype, the context and concurrency it must serve, and an accelerator.
`RenderConfig` adds the cluster-side choices (target, topology, replicas, engine, images, monitoring,
autoscaling, security references). Both validate here so the renderer never sees a bad value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmcell.config.gateway import POLICIES

DTYPES = ("bf16", "fp16", "fp32", "int8", "int4")
ACCELERATORS = ("tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e", "nvidia-l4", "nvidia-a100-40gb",
                "nvidia-a100-80gb", "nvidia-h100-80gb", "cpu")
TARGETS = ("gke-tpu", "gke-gpu", "tke-gpu", "cpu")
ENGINES = ("builtin", "vllm")
MONITORING = ("gmp", "prometheus-operator", "none")
AUTOSCALERS = ("admin", "hpa", "keda", "none")
"""admin: the cell's admin sizes the groups (one per replica its autoscaler wants; scale from
zero); hpa/keda: Kubernetes sizes them on requests waiting and the admin places onto the groups
that exist."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_LABEL = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9._-]{1,63}=[A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PlanConfig:
    model: str | None = "smollm2-135m-instruct"
    """Built-in alias, GGUF file or Hugging Face directory read for its shape; None with `params`."""
    params: float | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    dtype: str = "bf16"
    context: int = 2048
    """Tokens per sequence (prompt + output) the KV cache must hold."""
    concurrency: int = 8
    """Sequences served at once at full context."""
    accelerator: str = "cpu"
    top: int = 3
    """Fitting candidates listed."""

    def __post_init__(self) -> None:
        if self.model is None and self.params is None:
            raise ValueError("give a model (--model) or a parameter count (--params)")
        if self.params is not None and not 1e6 <= self.params <= 1e14:
            raise ValueError(f"params={self.params:g} must be between 1e6 and 1e14")
        for name in ("layers", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 100_000:
                raise ValueError(f"{name}={value} must be between 1 and 100000")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {DTYPES}")
        if not 1 <= self.context <= 10_000_000:
            raise ValueError(f"context={self.context} must be between 1 and 10000000 tokens")
        if not 1 <= self.concurrency <= 100_000:
            raise ValueError(f"concurrency={self.concurrency} must be between 1 and 100000")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator={self.accelerator!r} is not one of {ACCELERATORS}")
        if not 1 <= self.top <= 50:
            raise ValueError(f"top={self.top} must be between 1 and 50")


@dataclass(frozen=True)
class RenderConfig:
    target: str
    plan: PlanConfig
    topology: str | None = None
    """TPU topology (`4x8`) or GPU count per group (`8`, `2x8` = 2 nodes x 8); None = best planned."""
    replicas: int = 1
    """Model-server groups (LeaderWorkerSet replicas)."""
    engine: str = "builtin"
    namespace: str = "llmcell"
    name: str = "llmcell"
    image: str = "ghcr.io/llmcell/llmcell:0.1.0"
    vllm_image: str | None = None
    """vLLM image for `--engine vllm` (default: vllm/vllm-openai, or vllm/vllm-tpu on TPU)."""
    served_model: str | None = None
    """Model name/path passed to the engine in the pod (default: the planned model)."""
    sax_path: str = "/sax/test/model"
    gcp_service_account: str | None = None
    spot: bool = False
    spot_label: str | None = None
    """TKE spot node label `key=value` (GKE uses cloud.google.com/gke-spot=true)."""
    gpus_per_pod: int | None = None
    cpu: str | None = None
    memory: str | None = None
    monitoring: str = "gmp"
    autoscaler: str = "admin"
    fallbacks: bool = False
    """GKE: a ComputeClass that falls back from the planned shape to others the same group can
    run (other TPU generations or GPU types), each on-demand then spot (deploy/fallbacks.py)."""
    min_replicas: int = 1
    max_replicas: int = 4
    target_waiting: int = 5
    """Requests waiting per group the autoscaler aims for."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    monitoring_namespace: str | None = None
    """Namespace the scraper runs in (NetworkPolicy): gmp-system or monitoring by default."""
    latency_slo: float = 20.0
    """p99 end-to-end latency (seconds) above which an alert fires."""
    gateway_replicas: int = 2
    """Replicas of the gateway, and of the endpoint picker with `inference_pool`."""
    policy: str = "least_load"
    """The routing policy of the gateway and the endpoint picker."""
    gateway_api: bool = False
    gateway_name: str = "inference-gateway"
    inference_pool: bool = False
    api_keys_secret: str | None = None
    """Secret whose key `admin-key` is the first admin API key (`llmcell keys new key`)."""
    cell_secret: str | None = None
    """Secret whose key `token` is the cell credential (default: <name>-cell)."""
    tls_secret: str | None = None
    """kubernetes.io/tls Secret: the gateway serves HTTPS with its tls.crt and tls.key."""
    cert_manager_issuer: str | None = None
    """cert-manager issuer that signs the gateway's certificate: a Certificate is rendered whose
    Secret (`tls_secret`, default <name>-gateway-tls) the gateway serves HTTPS with."""
    cert_manager_kind: str = "ClusterIssuer"
    hf_token_secret: str | None = None
    model_pvc: str | None = None
    adapter_pvc: str | None = None
    """A ReadOnlyMany PersistentVolumeClaim of LoRA adapter directories, mounted at /adapters
    on the model servers and the admin (which checks adapters at publish)."""
    """PersistentVolumeClaim holding the weights, mounted read-only at /models."""
    admin_storage: str = "1Gi"
    storage_class: str | None = None
    state_secret: str | None = None
    """Secret whose key `url` is a PostgreSQL URL: the admin runs 2 replicas on it (one leads,
    elected; the other stands by), instead of one on SQLite."""
    batch_blobs: str | None = None
    """Where batch files' bytes live (`gs://bucket/prefix`, `s3://...`; the image needs the
    fsspec filesystem, gcsfs or s3fs); default: the admin's state volume."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not one of {TARGETS}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r} is not one of {ENGINES}")
        if self.monitoring not in MONITORING:
            raise ValueError(f"monitoring={self.monitoring!r} is not one of {MONITORING}")
        if self.autoscaler not in AUTOSCALERS:
            raise ValueError(f"autoscaler={self.autoscaler!r} is not one of {AUTOSCALERS}")
        for field in ("namespace", "name"):
            if not _DNS_LABEL.match(getattr(self, field)) or len(getattr(self, field)) > 40:
                raise ValueError(f"{field}={getattr(self, field)!r} must be a DNS label of at "
                                 "most 40 characters (lowercase letters, digits, '-')")
        if self.cert_manager_kind not in ("ClusterIssuer", "Issuer"):
            raise ValueError(f"cert_manager_kind={self.cert_manager_kind!r} is not ClusterIssuer "
                             "or Issuer")
        for field in ("gcp_service_account", "api_keys_secret", "cell_secret", "tls_secret",
                      "state_secret",
                      "cert_manager_issuer", "hf_token_secret",
                      "model_pvc", "adapter_pvc", "storage_class"):
            value = getattr(self, field)
            if value is not None and field != "gcp_service_account" and not _DNS_LABEL.match(value):
                raise ValueError(f"{field}={value!r} must be a Kubernetes object name")
        accel = self.plan.accelerator
        wanted = {"gke-tpu": accel.startswith("tpu-"), "gke-gpu": accel.startswith("nvidia-"),
                  "tke-gpu": accel.startswith("nvidia-"), "cpu": accel == "cpu"}[self.target]
        if not wanted:
            raise ValueError(f"accelerator={accel!r} does not run on target={self.target!r} "
                             "(gke-tpu: tpu-*, gke-gpu/tke-gpu: nvidia-*, cpu: cpu)")
        if not 1 <= self.replicas <= 1000:
            raise ValueError(f"replicas={self.replicas} must be between 1 and 1000")
        lowest = 0 if self.autoscaler == "admin" else 1  # the admin scales groups to zero
        if not lowest <= self.min_replicas <= self.max_replicas <= 1000 or self.max_replicas < 1:
            raise ValueError(f"min_replicas={self.min_replicas}, max_replicas={self.max_replicas}:"
                             f" need {lowest} <= min <= max <= 1000 and max >= 1 (0 groups only "
                             "with --autoscaler admin, which holds requests while one starts)")
        if self.fallbacks and self.target not in ("gke-tpu", "gke-gpu"):
            raise ValueError(f"fallbacks need a GKE target (gke-tpu, gke-gpu), not "
                             f"target={self.target!r}: they are a GKE ComputeClass")
        if self.target_waiting < 1:
            raise ValueError(f"target_waiting={self.target_waiting} must be >= 1")
        if self.latency_slo <= 0:
            raise ValueError(f"latency_slo={self.latency_slo} must be > 0 seconds")
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not one of {POLICIES}")
        if self.gateway_replicas < 2:
            raise ValueError(f"gateway_replicas={self.gateway_replicas} must be >= 2 (the "
                             "PodDisruptionBudget keeps one up)")
        if self.gpus_per_pod is not None and not 1 <= self.gpus_per_pod <= 16:
            raise ValueError(f"gpus_per_pod={self.gpus_per_pod} must be between 1 and 16")
        if self.state_secret is not None and self.batch_blobs is None:
            raise ValueError("state_secret: admins that share PostgreSQL need files both can "
                             "read; give --batch-blobs gs://bucket/prefix (or s3://...)")
        if self.batch_blobs is not None and "://" not in self.batch_blobs:
            raise ValueError(f"batch_blobs={self.batch_blobs!r} must be a URL such as "
                             "gs://bucket/prefix (the default keeps them on the state volume)")
        for field in ("cpu", "memory", "admin_storage"):
            value = getattr(self, field)
            if value is not None and not _QUANTITY.match(value):
                raise ValueError(f"{field}={value!r} is not a Kubernetes quantity (e.g. 16, "
                                 "500m, 64Gi)")
        if self.spot_label is not None and not _LABEL.match(self.spot_label):
            raise ValueError(f"spot_label={self.spot_label!r} must be key=value")
        if self.spot and self.target == "tke-gpu" and self.spot_label is None:
            raise ValueError("--spot on tke-gpu needs --spot-label key=value (the label of the "
                             "cluster's spot node pool)")
        if not self.sax_path.startswith("/sax/") or self.sax_path.count("/") != 3:
            raise ValueError(f"sax_path={self.sax_path!r} must look like /sax/<cell>/<model>")
        if not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus_url={self.prometheus_url!r} must be an http(s) URL")
