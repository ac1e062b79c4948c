"""`llmcell plan` and `llmcell render`: flags -> `PlanConfig` / `RenderConfig` -> output.

Kept apart from `llmcell/cli.py` (the serving verbs) because the deployment verbs have many flags
of their own; `llmcell/cli.py` only registers them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from llmcell.config.gateway import POLICIES
from llmcell.config.deploy import (ACCELERATORS, AUTOSCALERS, DTYPES, ENGINES, MONITORING,
                                   TARGETS, PlanConfig, RenderConfig)

DEFAULT_ACCELERATOR = {"gke-tpu": "tpu-v5e", "gke-gpu": "nvidia-l4",
                       "tke-gpu": "nvidia-a100-80gb", "cpu": "cpu"}


def _params(text: str) -> float:
    t = text.strip().lower()
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}.get(t[-1:], 1.0)
    try:
        return float(t[:-1] if scale != 1.0 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter count (175e9, 70B, "
                                         "135M)") from None


def _add_model_flags(p: argparse.ArgumentParser, accelerator_default: str | None) -> None:
    g = p.add_argument_group("model and load")
    g.add_argument("--model", default=None,
                   help="built-in alias, GGUF file or Hugging Face directory, read for its "
                        "shape (default: smollm2-135m-instruct unless --params is given)")
    g.add_argument("--params", type=_params, default=None,
                   help="parameter count instead of a model file (175e9, 70B); the KV cache "
                        "then uses a shape typical for that size unless the next three are given")
    g.add_argument("--layers", type=int, default=None, help="transformer layers (KV cache size)")
    g.add_argument("--kv-heads", type=int, default=None, help="key/value heads (KV cache size)")
    g.add_argument("--head-dim", type=int, default=None, help="dimension of one head")
    g.add_argument("--dtype", default="bf16", choices=DTYPES,
                   help="weight dtype: bytes per parameter (default: %(default)s)")
    g.add_argument("--context", type=int, default=2048,
                   help="tokens per sequence, prompt + output (default: %(default)s)")
    g.add_argument("--concurrency", type=int, default=8,
                   help="sequences served at once at full context (default: %(default)s)")
    g.add_argument("--accelerator", default=accelerator_default, choices=ACCELERATORS,
                   help="chip or GPU to plan for" + (
                       " (default: %(default)s)" if accelerator_default else
                       " (default: tpu-v5e for gke-tpu, nvidia-l4 for gke-gpu, nvidia-a100-80gb "
                       "for tke-gpu, cpu for cpu)"))


def _plan_config(args: argparse.Namespace, accelerator: str, top: int = 3) -> PlanConfig:
    model = args.model if args.model or args.params is not None else "smollm2-135m-instruct"
    return PlanConfig(model=None if args.params is not None and not args.model else model,
                      params=args.params, layers=args.layers, kv_heads=args.kv_heads,
                      head_dim=args.head_dim, dtype=args.dtype, context=args.context,
                      concurrency=args.concurrency, accelerator=accelerator, top=top)


def cmd_plan(args: argparse.Namespace) -> int:
    from llmcell.deploy.plan import format_plan, make_plan

    config = _plan_config(args, args.accelerator, args.top)
    plan = make_plan(config)
    options = []
    if args.fallbacks:
        from llmcell.deploy.fallbacks import fallbacks

        options = fallbacks(config)
    if args.json:
        data = plan.to_json()
        if args.fallbacks:
            data["fallbacks"] = [{"accelerator": f.accelerator, "dtype": f.dtype,
                                  "candidate": dataclasses.asdict(f.candidate),
                                  "reason": f.reason} for f in options]
        print(json.dumps(data, indent=2))
    else:
        print(format_plan(plan))
        if args.fallbacks:
            from llmcell.deploy.fallbacks import format_fallbacks

            print("\nfallbacks, in the order to try them (llmcell render --fallbacks makes a "
                  "GKE ComputeClass of those one group can run):")
            print(format_fallbacks(options) if options else "(none: CPU plans have none)")
    return 0 if plan.candidates else 1


def render_config(args: argparse.Namespace) -> RenderConfig:
    accelerator = args.accelerator or DEFAULT_ACCELERATOR[args.target]
    return RenderConfig(
        target=args.target, plan=_plan_config(args, accelerator), topology=args.topology,
        replicas=args.replicas, engine=args.engine, namespace=args.namespace, name=args.name,
        image=args.image, vllm_image=args.vllm_image, served_model=args.served_model,
        gcp_service_account=args.gcp_service_account, spot=args.spot,
        spot_label=args.spot_label, gpus_per_pod=args.gpus_per_pod, cpu=args.cpu,
        memory=args.memory, monitoring=args.monitoring, autoscaler=args.autoscaler,
        min_replicas=args.min_replicas, max_replicas=max(args.max_replicas, args.min_replicas),
        target_waiting=args.target_waiting, prometheus_url=args.prometheus_url,
        monitoring_namespace=args.monitoring_namespace, latency_slo=args.latency_slo,
        gateway_replicas=args.gateway_replicas, policy=args.policy, gateway_api=args.gateway_api,
        gateway_name=args.gateway_name, inference_pool=args.inference_pool,
        api_keys_secret=args.api_keys_secret, tls_secret=args.tls_secret,
        cell_secret=args.cell_secret, cert_manager_issuer=args.cert_manager,
        cert_manager_kind=args.cert_manager_kind,
        hf_token_secret=args.hf_token_secret, model_pvc=args.model_pvc,
        adapter_pvc=args.adapter_pvc,
        admin_storage=args.admin_storage, storage_class=args.storage_class,
        batch_blobs=args.batch_blobs, state_secret=args.state_secret, fallbacks=args.fallbacks)


def cmd_render(args: argparse.Namespace) -> int:
    from llmcell.deploy.render import render_dir, render_stream

    config = render_config(args)
    if args.output:
        paths = render_dir(config, Path(args.output))
        print(f"llmcell render: wrote {len(paths)} files to {args.output} "
              f"(kubectl apply -k {args.output})", file=sys.stderr)
    else:
        sys.stdout.write(render_stream(config))
    return 0


def add_deploy_parsers(sub) -> None:
    p = sub.add_parser(
        "plan", help="size a model and list the smallest TPU/GPU/CPU shapes that fit",
        description="Estimate memory (weights + KV cache for CONCURRENCY x CONTEXT + runtime "
                    "overhead) and list the smallest fitting topologies or GPU counts, best "
                    "first, with chips, GKE nodes, machine type and tensor/pipeline sizes. "
                    "Exit status 1 when nothing fits.")
    _add_model_flags(p, "cpu")
    p.add_argument("--top", type=int, default=3, help="candidates listed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--fallbacks", action="store_true",
                   help="also list what else serves the model when the shape is short: other "
                        "TPU generations or GPU types, the other family, more quantisation")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser(
        "render", help="write Kubernetes manifests for a cell (GKE TPU/GPU, TKE GPU, CPU)",
        description="Render the cell (namespace, RBAC, admin, gateway, model-server groups as a "
                    "LeaderWorkerSet, autoscaling, monitoring, network policies) as YAML in a "
                    "fixed kind order. The group shape is --topology, or the best one "
                    "`llmcell plan` finds for the model flags.")
    r.add_argument("--target", required=True, choices=TARGETS,
                   help="gke-tpu: GKE multi-host TPU slices; gke-gpu: GKE GPU nodes; tke-gpu: "
                        "Tencent TKE GPU nodes; cpu: any cluster, CPU only")
    r.add_argument("-o", "--output", default=None,
                   help="directory for one file per object + kustomization.yaml (default: stdout)")
    _add_model_flags(r, None)
    g = r.add_argument_group("model-server groups")
    g.add_argument("--topology", default=None,
                   help="TPU topology (4x8), GPUs per group (8, or 2x8 = 2 nodes x 8), or a CPU "
                        "machine type (n2-standard-8); default: the best planned shape")
    g.add_argument("--replicas", type=int, default=1,
                   help="groups (LeaderWorkerSet replicas) (default: %(default)s)")
    g.add_argument("--engine", default="builtin", choices=ENGINES,
                   help="builtin: llmcell server on every pod; vllm: Ray + vLLM on the group with "
                        "an llmcell server on the leader joining the cell (default: builtin)")
    g.add_argument("--served-model", default=None,
                   help="model path/name the engine loads in the pod (default: --model, or "
                        "/models/model)")
    g.add_argument("--model-pvc", default=None,
                   help="PersistentVolumeClaim with the weights, mounted read-only at /models")
    g.add_argument("--adapter-pvc", default=None,
                   help="ReadOnlyMany PersistentVolumeClaim of LoRA adapter directories, mounted "
                        "at /adapters on the model servers and the admin (publish with "
                        "model_path /adapters/NAME and base)")
    g.add_argument("--gpus-per-pod", type=int, default=None,
                   help="GPUs per pod (tke-gpu default 4, as the TKE guide)")
    g.add_argument("--cpu", default=None, help="CPU per model-server pod, requests = limits")
    g.add_argument("--memory", default=None,
                   help="memory per model-server pod, requests = limits (tke-gpu: 64Gi)")
    g.add_argument("--spot", action="store_true",
                   help="run model servers on spot capacity (node selector, toleration, preStop "
                        "drain); with --fallbacks: spot before on-demand for each shape")
    g.add_argument("--fallbacks", action="store_true",
                   help="GKE: a ComputeClass the groups select, falling back from the planned "
                        "shape to the other TPU generations or GPU types the same group can run, "
                        "each on-demand and on spot")
    g.add_argument("--spot-label", default=None,
                   help="tke-gpu: the label key=value of the spot node pool")
    c = r.add_argument_group("cluster")
    c.add_argument("--namespace", default="llmcell", help="namespace (default: %(default)s)")
    c.add_argument("--name", default="llmcell", help="prefix of object names (default: llmcell)")
    c.add_argument("--image", default=RenderConfig.image,
                   help="llmcell image (default: %(default)s)")
    c.add_argument("--vllm-image", default=None,
                   help="vLLM image (default: vllm/vllm-openai, vllm/vllm-tpu on TPU)")
    c.add_argument("--gcp-service-account", default=None,
                   help="Workload Identity: GCP service account bound to the cell's "
                        "ServiceAccount")
    c.add_argument("--gateway-replicas", type=int, default=2,
                   help="gateway pods, >= 2 (default: %(default)s)")
    c.add_argument("--admin-storage", default="1Gi",
                   help="size of the admin's state volume (default: %(default)s)")
    c.add_argument("--storage-class", default=None, help="StorageClass of the admin's volume")
    c.add_argument("--batch-blobs", default=None, metavar="URL",
                   help="where batch files live: gs://bucket/prefix, s3://... (default: the "
                        "admin's state volume)")
    c.add_argument("--state-secret", default=None,
                   help="Secret (key url) with a PostgreSQL URL: 2 admins share it, one "
                        "leading (needs --batch-blobs); only referenced")
    c.add_argument("--api-keys-secret", default=None,
                   help="Secret whose key admin-key is the first admin API key, stored by the "
                        "admin at start (make one with `llmcell keys new key`); only referenced")
    c.add_argument("--cell-secret", default=None,
                   help="Secret whose key token is the cell credential every member reads (auth "
                        "on; default: NAME-cell; `llmcell keys new cell-token`); only referenced")
    c.add_argument("--cert-manager", default=None, metavar="ISSUER",
                   help="render a cert-manager Certificate for the gateway, signed by ISSUER; the "
                        "gateway serves HTTPS with its Secret (--tls-secret, default "
                        "NAME-gateway-tls)")
    c.add_argument("--cert-manager-kind", default="ClusterIssuer",
                   choices=["ClusterIssuer", "Issuer"], help="what ISSUER is (default: "
                                                               "%(default)s)")
    c.add_argument("--tls-secret", default=None,
                   help="kubernetes.io/tls Secret: the gateway serves HTTPS with it; only "
                        "referenced")
    c.add_argument("--hf-token-secret", default=None,
                   help="Secret (key token) with a Hugging Face token for vLLM; without it vLLM "
                        "runs with HF_HUB_OFFLINE=1")
    c.add_argument("--gateway-api", action="store_true",
                   help="add an HTTPRoute from --gateway-name to the cell's gateway")
    c.add_argument("--gateway-name", default="inference-gateway",
                   help="Gateway the HTTPRoute attaches to (default: %(default)s)")
    c.add_argument("--inference-pool", action="store_true",
                   help="add an InferencePool over the group leaders and the endpoint picker it "
                        "names (llmcell epp, Service <name>-ms-epp:9002), for a Gateway API "
                        "inference gateway")
    c.add_argument("--policy", default="least_load", choices=POLICIES,
                   help="routing policy of the gateway and the endpoint picker (default: "
                        "%(default)s)")
    o = r.add_argument_group("autoscaling and monitoring")
    o.add_argument("--autoscaler", default="admin", choices=AUTOSCALERS,
                   help="admin: the cell's admin sizes the groups, one per replica its "
                        "autoscaler wants (scale from zero); hpa: HorizontalPodAutoscaler on "
                        "requests waiting; keda: ScaledObject (default: %(default)s)")
    o.add_argument("--min-replicas", type=int, default=1,
                   help="fewest groups (default: 1; 0 with --autoscaler admin: scale to zero)")
    o.add_argument("--max-replicas", type=int, default=4, help="most groups (default: 4)")
    o.add_argument("--target-waiting", type=int, default=5,
                   help="requests waiting per group to aim for (default: %(default)s)")
    o.add_argument("--prometheus-url", default=RenderConfig.prometheus_url,
                   help="Prometheus KEDA queries (default: %(default)s)")
    o.add_argument("--monitoring", default="gmp", choices=MONITORING,
                   help="gmp: GKE managed Prometheus PodMonitoring; prometheus-operator: "
                        "ServiceMonitor + PodMonitor; both add a PrometheusRule (default: gmp)")
    o.add_argument("--monitoring-namespace", default=None,
                   help="namespace of the scraper let through the NetworkPolicy (default: "
                        "gmp-system, or monitoring for prometheus-operator)")
    o.add_argument("--latency-slo", type=float, default=20.0,
                   help="p99 latency in seconds above which the alert fires (default: 20)")
    r.set_defaults(func=cmd_render)
