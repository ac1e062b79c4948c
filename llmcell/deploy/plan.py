"""Topology planner: how many chips or GPUs a model needs, and which GKE shapes provide them.

memory = weights (params x bytes of the weight dtype)
       + KV cache (2 x layers x KV heads x head dim x 2 bytes x context x concurrency)
       + runtime overhead (10% of the total held back for activations, workspaces and the
         XLA/CUDA runtime, as vLLM's gpu_memory_utilization=0.9 does; at least 1 GB).
Every shape of the accelerator whose total device memory covers that is a candidate; the smallest
(fewest devices, then fewest nodes) comes first. Tensor parallelism spans the devices of a TPU slice
(as vLLM on TPU does) or the GPUs of one node, with pipeline stages across GPU nodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmcell.config.deploy import PlanConfig
from llmcell.deploy.accelerators import GB, Accelerator, Shape, accelerator, shape_memory
from llmcell.deploy.shapes import ModelShape, model_shape

WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0 + 2 / 4096,
                "int4": 0.5 + 2 / 128}
"""Bytes per parameter, with the per-channel (int8) or per-128-group (int4) fp16 scales."""
KV_BYTES = 2.0
"""The KV cache stays 16-bit whatever the weights are."""
RUNTIME_RESERVE = 0.10
MIN_OVERHEAD = 1 * GB
"""Floor of the overhead: the serving process itself (Python, torch, the HTTP server)."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


@dataclass(frozen=True)
class Candidate:
    topology: str
    devices: int
    nodes: int
    machine_type: str
    devices_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    memory: int
    headroom: float
    """Fraction of the group's device memory left after the estimate."""


@dataclass(frozen=True)
class Plan:
    model: ModelShape
    dtype: str
    context: int
    concurrency: int
    accelerator: str
    memory: MemoryEstimate
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...]

    def best(self) -> Candidate:
        if not self.candidates:
            raise ValueError(f"{self.model.name} needs {self.memory.total / GB:.1f} GB, more "
                             f"than the largest {self.accelerator} shape offers")
        return self.candidates[0]

    def to_json(self) -> dict:
        data = asdict(self)
        data["memory"]["total"] = self.memory.total
        return data


def estimate(shape: ModelShape, dtype: str, context: int, concurrency: int) -> MemoryEstimate:
    weights = int(shape.params * WEIGHT_BYTES[dtype])
    kv = int(shape.kv_bytes_per_token(KV_BYTES) * context * concurrency)
    overhead = max(int((weights + kv) * RUNTIME_RESERVE / (1 - RUNTIME_RESERVE)), MIN_OVERHEAD)
    return MemoryEstimate(weights, kv, overhead)


def parallelism(accel: Accelerator, shape: Shape) -> tuple[int, int]:
    """(tensor parallel, pipeline parallel) for one group of this shape."""
    if accel.kind == "gpu":
        return shape.per_node, shape.nodes
    return shape.devices, 1


def candidate(accel: Accelerator, shape: Shape, need: int) -> Candidate:
    memory = shape_memory(accel, shape)
    tp, pp = parallelism(accel, shape)
    return Candidate(shape.topology, shape.devices, shape.nodes, shape.machine_type,
                     shape.per_node, tp, pp, memory, round(1 - need / memory, 4))


def make_plan(config: PlanConfig) -> Plan:
    shape, notes = model_shape(config)
    accel = accelerator(config.accelerator)
    memory = estimate(shape, config.dtype, config.context, config.concurrency)
    fitting = [candidate(accel, s, memory.total) for s in accel.shapes
               if shape_memory(accel, s) >= memory.total]
    fitting.sort(key=lambda c: (c.memory if accel.kind == "cpu" else c.devices, c.nodes))
    if not fitting:
        notes.append(f"no {accel.name} shape fits {memory.total / GB:.1f} GB: lower --context "
                     "or --concurrency, quantize (--dtype int8/int4), or pick a larger accelerator")
    if accel.kind == "cpu" and config.dtype in ("bf16", "fp16"):
        notes.append("the built-in engine runs fp32 on CPUs without bf16 instructions: plan with "
                     "--dtype fp32 for those")
    return Plan(shape, config.dtype, config.context, config.concurrency, accel.name, memory,
                tuple(fitting[:config.top]), tuple(notes))


def format_plan(plan: Plan) -> str:
    m, mem = plan.model, plan.memory
    unit = "GPUs" if plan.accelerator.startswith("nvidia") else (
        "chips" if plan.accelerator.startswith("tpu") else "pods")
    lines = [
        f"model        {m.name}: {m.params / 1e9:.3g}B parameters, {m.layers} layers, "
        f"{m.kv_heads} KV heads x {m.head_dim} ({m.source})",
        f"serving      {plan.dtype} weights, {plan.concurrency} sequences x {plan.context} tokens",
        f"memory       weights {mem.weights / GB:.1f} GB + KV cache {mem.kv_cache / GB:.1f} GB + "
        f"runtime overhead {mem.overhead / GB:.1f} GB = {mem.total / GB:.1f} GB",
        f"accelerator  {plan.accelerator}", ""]
    header = ("#", "topology", unit, "nodes", "machine type", "TP", "PP", "memory", "headroom")
    rows = [header] + [
        (str(i), c.topology, str(c.devices), str(c.nodes), c.machine_type,
         str(c.tensor_parallel), str(c.pipeline_parallel), f"{c.memory / GB:.0f} GB",
         f"{c.headroom:.0%}") for i, c in enumerate(plan.candidates, 1)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
