"""Model-server groups as a LeaderWorkerSet: one group per TPU slice or multi-GPU replica.

`group_layout` turns the chosen shape (a planned topology or `--topology`) into pods per group,
accelerators per pod and the parallel sizes. Two engines fill the group:
- builtin: every pod runs `llmcell server`; the group contract is LeaderWorkerSet's env
  (LWS_LEADER_ADDRESS, LWS_GROUP_SIZE, LWS_WORKER_INDEX) plus LLMCELL_GROUP_PORT for the
  torch.distributed rendezvous on the leader.
- vllm: the upstream multi-host layout. The leader starts a Ray head, waits for LWS_GROUP_SIZE
  nodes and runs vLLM's OpenAI server with the planned tensor/pipeline sizes; workers join the Ray
  cluster; an `llmcell server --engine openai` container on the leader joins the cell for it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from llmcell.deploy.accelerators import Accelerator, accelerator, shape_memory
from llmcell.deploy.common import (ADAPTERS_PATH, GROUP_PORT, RAY_PORT, SCRATCH, SERVER_PORT,
                                   VLLM_PORT, Cell, adapter_volume, http_container, pod_env,
                                   small_resources)
from llmcell.deploy.k8s import (ComputeClass, Container, ContainerPort, EnvVar, LeaderWorkerSet,
                                LeaderWorkerSetSpec, LeaderWorkerTemplate, ObjectMeta, PodSpec,
                                PodTemplate, Probe, Resources, Service, ServicePort, ServiceSpec,
                                Toleration, Volume, VolumeMount)
from llmcell.deploy.fallbacks import Fallback, compute_class, fallbacks
from llmcell.deploy.plan import candidate, make_plan, parallelism

VLLM_IMAGES = {"gpu": "vllm/vllm-openai:v0.33.0", "tpu": "vllm/vllm-tpu:v0.33.0",
               "cpu": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.33.0"}
ENGINE_DTYPE = {"bf16": ["--dtype", "bfloat16"], "fp16": ["--dtype", "float16"],
                "fp32": ["--dtype", "float32"], "int8": ["--quantization", "int8"]}


@dataclass(frozen=True)
class GroupLayout:
    accelerator: Accelerator
    topology: str
    size: int
    """Pods per group (leader included)."""
    per_pod: int
    """Chips or GPUs per pod (0 on CPU)."""
    tensor_parallel: int
    pipeline_parallel: int
    memory_bytes: int
    """Accelerator (or host) memory of the whole group: the capacity offered to the admin."""
    machine_type: str


def group_layout(cell: Cell) -> GroupLayout:
    c = cell.config
    accel = accelerator(c.plan.accelerator)
    shape = (accel.shape(c.topology) if c.topology else
             accel.shape(make_plan(c.plan).best().topology))
    tp, pp = parallelism(accel, shape)
    size, per_pod = shape.nodes, (shape.per_node if accel.kind != "cpu" else 0)
    if c.target == "tke-gpu" or (accel.kind == "gpu" and c.gpus_per_pod):
        per_pod = c.gpus_per_pod or 4
        size = max(1, math.ceil(shape.devices / per_pod))
        tp, pp = per_pod, size
    return GroupLayout(accel, shape.topology, size, per_pod, tp, pp,
                       shape_memory(accel, shape) if c.target != "tke-gpu"
                       else accel.device_memory * per_pod * size, shape.machine_type)


def _resources(cell: Cell, g: GroupLayout) -> Resources:
    c = cell.config
    if g.accelerator.kind == "tpu":
        cpu, mem, extra = str(6 * g.per_pod), f"{24 * g.per_pod}Gi", {"google.com/tpu": g.per_pod}
    elif c.target == "tke-gpu":
        cpu, mem, extra = "16", "64Gi", {"nvidia.com/gpu": g.per_pod}
    elif g.accelerator.kind == "gpu":
        cpu, mem, extra = str(4 * g.per_pod), f"{24 * g.per_pod}Gi", {"nvidia.com/gpu": g.per_pod}
    else:
        vcpus = int(g.machine_type.rsplit("-", 1)[1])
        node_gb = {2: 8, 4: 16, 8: 32, 16: 64, 32: 128, 48: 192, 64: 256, 80: 320}[vcpus]
        cpu, mem, extra = str(max(1, vcpus - 1)), f"{int(node_gb * 0.7)}Gi", {}
    amounts = {"cpu": c.cpu or cpu, "memory": c.memory or mem,
               **{k: str(v) for k, v in extra.items()}}
    return Resources(dict(amounts), dict(amounts))


def _placement(cell: Cell, g: GroupLayout) -> tuple[dict[str, str], list[Toleration]]:
    if cell.config.fallbacks:  # the ComputeClass picks the accelerator, topology and spot
        device = "google.com/tpu" if g.accelerator.kind == "tpu" else "nvidia.com/gpu"
        return ({"cloud.google.com/compute-class": compute_class_name(cell)},
                [Toleration(device), Toleration("cloud.google.com/gke-spot", operator="Equal",
                                                value="true")])
    selector, tolerations = cell.spot()
    if g.accelerator.kind == "tpu":
        selector = {"cloud.google.com/gke-tpu-accelerator": g.accelerator.node_label,
                    "cloud.google.com/gke-tpu-topology": g.topology, **selector}
        tolerations = [Toleration("google.com/tpu"), *tolerations]
    elif g.accelerator.kind == "gpu":
        if cell.config.target == "gke-gpu":
            selector = {"cloud.google.com/gke-accelerator": g.accelerator.node_label, **selector}
        tolerations = [Toleration("nvidia.com/gpu"), *tolerations]
    return selector, tolerations


def compute_class_name(cell: Cell) -> str:
    return f"{cell.config.namespace}-{cell.group_set}"


def capacity_fallbacks(cell: Cell) -> list:
    """The ComputeClass the groups select with `fallbacks` (cluster-scoped: named after the
    namespace and the group set): the group's own shape first."""
    if not cell.config.fallbacks:
        return []
    g = group_layout(cell)
    plan = make_plan(cell.config.plan)
    own = Fallback(g.accelerator.name, cell.config.plan.dtype,
                   candidate(g.accelerator, g.accelerator.shape(g.topology),
                             plan.memory.total), "planned")
    others = [f for f in fallbacks(cell.config.plan) if f.accelerator != own.accelerator]
    spec, _ = compute_class(compute_class_name(cell), [own, *others], cell.config.spot)
    return [ComputeClass(ObjectMeta(compute_class_name(cell), None,
                                    cell.labels("model-server")), spec)]


def _served_model(cell: Cell) -> str:
    c = cell.config
    return c.served_model or c.plan.model or "/models/model"


def _builtin_container(cell: Cell, g: GroupLayout, resources: Resources, lifecycle) -> Container:
    c = cell.config
    if c.plan.dtype == "int4":
        raise ValueError("dtype='int4': the built-in engine quantizes to int8 only; render with "
                         "--dtype int8 or --engine vllm")
    dtype = ENGINE_DTYPE[c.plan.dtype]
    memory = g.memory_bytes
    if g.accelerator.kind == "cpu":
        # bf16 only where the CPU has it (the engine falls back to fp32); offer the pod's memory
        dtype = ["--dtype", "auto"] if c.plan.dtype in ("bf16", "fp16") else dtype
        memory = _bytes(resources.limits["memory"])
    args = ["server", "--host", "0.0.0.0", "--port", str(SERVER_PORT), "--admin", cell.admin_url,
            "--server-id", "$(POD_NAME)", "--advertise", f"http://$(POD_IP):{SERVER_PORT}",
            "--memory", str(memory), *dtype]
    if g.accelerator.kind == "gpu":
        args += ["--device", "cuda"]
    elif g.accelerator.kind == "cpu":
        args += ["--threads", str(_cores(resources.limits["cpu"]))]
    env = [EnvVar("LLMCELL_GROUP_PORT", str(GROUP_PORT)),
           EnvVar("TORCH_EXTENSIONS_DIR", "/tmp/torch_extensions"), cell.credential()]
    return http_container("llmcell", c.image, args, SERVER_PORT, resources, env, _mounts(cell),
                          startup_failures=60, lifecycle=lifecycle, ready_path="/ready")


def _cores(quantity: str) -> int:
    """Whole cores in a CPU quantity ("7", "7.5", "7500m"), at least 1."""
    value = int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return max(1, int(value))


def _bytes(quantity: str) -> int:
    """Bytes in a memory quantity ("5Gi", "512Mi", "64G", "1000")."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[:-len(suffix)]) * factor)
    return int(float(quantity))


def _mounts(cell: Cell) -> list[VolumeMount]:
    mounts = [VolumeMount("dshm", "/dev/shm")]
    if cell.config.model_pvc:
        mounts.append(VolumeMount("models", "/models", read_only=True))
    if cell.config.adapter_pvc:
        mounts.append(VolumeMount("adapters", ADAPTERS_PATH, read_only=True))
    return mounts


_WAIT_FOR_RAY = """python3 - <<'PY'
import os, time, ray
ray.init(address="auto")
want = int(os.environ["LWS_GROUP_SIZE"])
while sum(node["Alive"] for node in ray.nodes()) < want:
    time.sleep(2)
print(f"ray: all {want} nodes of the group joined", flush=True)
PY"""


def _vllm_containers(cell: Cell, g: GroupLayout, resources: Resources, lifecycle
                     ) -> tuple[list[Container], Container]:
    c = cell.config
    image = c.vllm_image or VLLM_IMAGES[g.accelerator.kind]
    model = _served_model(cell)
    serve = (f"vllm serve {model} --host 0.0.0.0 --port {VLLM_PORT} --served-model-name {model}"
             f" --tensor-parallel-size {g.tensor_parallel}"
             f" --pipeline-parallel-size {g.pipeline_parallel} --max-model-len {c.plan.context}")
    # int8/int4 come from a pre-quantized checkpoint (GPTQ, AWQ, compressed-tensors): vLLM reads
    # the scheme from its config, so only 16/32-bit weights name a dtype.
    serve += {"bf16": " --dtype bfloat16", "fp16": " --dtype float16",
              "fp32": " --dtype float32"}.get(c.plan.dtype, "")
    if g.size > 1:
        script = (f"set -e\nray start --head --port={RAY_PORT} --disable-usage-stats\n"
                  f"{_WAIT_FOR_RAY}\nexec {serve} --distributed-executor-backend ray\n")
    else:
        script = f"set -e\nexec {serve}\n"
    env = [EnvVar("HOME", "/tmp"), EnvVar("VLLM_NO_USAGE_STATS", "1")]
    env += ([EnvVar.secret_ref("HF_TOKEN", c.hf_token_secret, "token")] if c.hf_token_secret
            else [EnvVar("HF_HUB_OFFLINE", "1")])
    mounts = [SCRATCH[1], *_mounts(cell)]
    health = dict(period_seconds=10)
    vllm = Container(
        name="vllm", image=image, command=["sh", "-c", script], env=env,
        ports=[ContainerPort(VLLM_PORT, "vllm")], resources=resources, volume_mounts=mounts,
        startup_probe=Probe.http("/health", "vllm", failure_threshold=180, **health),
        readiness_probe=Probe.http("/health", "vllm", period_seconds=5),
        liveness_probe=Probe.http("/health", "vllm", failure_threshold=6, **health),
        lifecycle=lifecycle)
    joiner = http_container(
        "llmcell", c.image,
        ["server", "--engine", "openai", "--upstream", f"http://127.0.0.1:{VLLM_PORT}",
         "--served-model-name", model, "--host", "0.0.0.0", "--port", str(SERVER_PORT),
         "--admin", cell.admin_url, "--server-id", "$(POD_NAME)",
         "--advertise", f"http://$(POD_IP):{SERVER_PORT}", "--memory", str(g.memory_bytes)],
        SERVER_PORT, small_resources(), [cell.credential()], ready_path="/ready")
    ray_check = ["sh", "-c", f"ray health-check --address $LWS_LEADER_ADDRESS:{RAY_PORT}"]
    worker = Container(
        name="ray-worker", image=image,
        command=["sh", "-c", f"exec ray start --address=$(LWS_LEADER_ADDRESS):{RAY_PORT} --block"
                             " --disable-usage-stats"],
        env=pod_env(), resources=resources, volume_mounts=mounts,
        readiness_probe=Probe.command(ray_check, period_seconds=15, timeout_seconds=10),
        liveness_probe=Probe.command(ray_check, period_seconds=30, timeout_seconds=10,
                                     failure_threshold=6),
        lifecycle=lifecycle)
    return [vllm, joiner], worker


def model_servers(cell: Cell) -> list:
    c = cell.config
    g = group_layout(cell)
    if c.engine == "builtin" and g.accelerator.kind == "tpu":
        print("llmcell render: the built-in engine has no TPU (XLA) device yet: this renders the "
              "group layout and contract; serve on TPU today with --engine vllm", file=sys.stderr)
    resources = _resources(cell, g)
    lifecycle = {"preStop": {"exec": {"command": ["sleep", "5"]}}} if c.spot else None
    selector, tolerations = _placement(cell, g)
    volumes = [SCRATCH[0], Volume("dshm", empty_dir={"medium": "Memory", "sizeLimit": "16Gi"})]
    if c.model_pvc:
        volumes.append(Volume("models", persistent_volume_claim={"claimName": c.model_pvc,
                                                                 "readOnly": True}))
    if c.adapter_pvc:
        volumes.append(adapter_volume(c.adapter_pvc))

    def template(role: str, containers: list[Container]) -> PodTemplate:
        return PodTemplate(ObjectMeta(f"{cell.group_set}-{role}", labels={
            **cell.labels("model-server"), "llmcell.dev/role": role}), PodSpec(
            containers, service_account_name=cell.service_account,
            node_selector=selector or None, tolerations=tolerations or None, volumes=volumes,
            automount_service_account_token=False,
            termination_grace_period_seconds=30 if c.spot else 60))

    if c.engine == "builtin":
        container = _builtin_container(cell, g, resources, lifecycle)
        leader, worker = [container], container
    else:
        leader, worker = _vllm_containers(cell, g, resources, lifecycle)
    annotations = ({"leaderworkerset.sigs.k8s.io/exclusive-topology":
                    "cloud.google.com/gke-nodepool"} if g.accelerator.kind == "tpu" else None)
    lws = LeaderWorkerSet(cell.meta("model-server", cell.group_set, annotations),
                          LeaderWorkerSetSpec(c.replicas, LeaderWorkerTemplate(
                              g.size, template("leader", leader),
                              template("worker", [worker]))))
    ports = [ServicePort("http", SERVER_PORT, "http")]
    if c.engine == "vllm":
        ports.append(ServicePort("vllm", VLLM_PORT, "vllm"))
    leader_service = Service(cell.meta("model-server", f"{cell.group_set}-leader"), ServiceSpec(
        {**cell.selector("model-server"), "llmcell.dev/role": "leader"}, ports))
    return [leader_service, lws]
