"""Capacity fallbacks: when the planned shape is short (TPUs and large GPUs often are), what else
serves the same model, in order, and the GKE ComputeClass that tries them.

`fallbacks` (pure) plans the model on every accelerator of the same family first (other TPU
generations or GPU types), then on the other family, then with more quantisation on the planned
accelerator; each is the smallest shape that fits. `compute_class` turns the ones the same
model-server group can run unchanged (the same kind of device, the same devices per node and the
same nodes per group, so the pod template, its resources and its parallelism hold) into a
ComputeClass priority list, each shape on-demand and then on spot capacity; the rest need a
group set of their own (`llmcell render --accelerator ...`) and are listed as notes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmcell.config.deploy import PlanConfig
from llmcell.deploy.accelerators import ACCELERATORS, accelerator
from llmcell.deploy.plan import Candidate, make_plan

MORE_QUANTISED = {"fp32": "bf16", "bf16": "int8", "fp16": "int8", "int8": "int4"}
PREFERENCE = ("tpu-v6e", "tpu-v5e", "tpu-v5p", "tpu-v4", "nvidia-h100-80gb", "nvidia-a100-80gb",
              "nvidia-a100-40gb", "nvidia-l4")
"""The order alternatives are tried in: the newest generation of each family first."""


@dataclass(frozen=True)
class Fallback:
    accelerator: str
    dtype: str
    candidate: Candidate
    reason: str


def fallbacks(config: PlanConfig, most: int = 8) -> list[Fallback]:
    """The planned shape first, then its alternatives in the order to try them."""
    primary = accelerator(config.accelerator)
    if primary.kind == "cpu":
        return []
    ranked = [ACCELERATORS[name] for name in PREFERENCE]
    family = [a for a in ranked if a.kind == primary.kind and a is not primary]
    other = [a for a in ranked if a.kind not in (primary.kind, "cpu")][:2]
    tries = [(primary.name, config.dtype, "planned")]
    tries += [(a.name, config.dtype, f"another {a.kind.upper()} type") for a in family]
    tries += [(a.name, config.dtype, f"{a.kind.upper()}s instead") for a in other]
    if config.dtype in MORE_QUANTISED:
        dtype = MORE_QUANTISED[config.dtype]
        tries.append((primary.name, dtype, f"{dtype} weights on {primary.name}"))
    out: list[Fallback] = []
    for name, dtype, reason in tries:
        plan = make_plan(replace(config, accelerator=name, dtype=dtype, top=50))
        if not plan.candidates:
            continue
        best = plan.candidates[0]
        if out and name != primary.name:  # a shape the planned group also fits comes first
            first = out[0].candidate
            best = next((c for c in plan.candidates if c.devices_per_node ==
                         first.devices_per_node and c.nodes == first.nodes), best)
        out.append(Fallback(name, dtype, best, reason))
    return out[:most]


def interchangeable(first: Fallback, other: Fallback) -> bool:
    """Whether one group's pod template runs on `other` as it does on `first`."""
    a, b = first.candidate, other.candidate
    return (accelerator(first.accelerator).kind == accelerator(other.accelerator).kind
            and first.dtype == other.dtype and a.devices_per_node == b.devices_per_node
            and a.nodes == b.nodes)


def _priority(f: Fallback, spot: bool) -> dict:
    accel = accelerator(f.accelerator)
    c = f.candidate
    if accel.kind == "tpu":
        device = {"tpu": {"type": accel.node_label, "count": c.devices_per_node,
                          "topology": c.topology}}
    else:
        device = {"gpu": {"type": accel.node_label, "count": c.devices_per_node},
                  "machineType": c.machine_type}
    return {**device, "spot": spot}


def compute_class(name: str, options: list[Fallback], spot_first: bool = False
                  ) -> tuple[dict, list[str]]:
    """(the ComputeClass spec, notes on the fallbacks it cannot hold) for `options` (the planned
    shape first)."""
    usable = [f for f in options if interchangeable(options[0], f)]
    priorities = []
    for f in usable:
        order = (True, False) if spot_first else (False, True)
        priorities += [_priority(f, spot) for spot in order]
    notes = [f"{f.accelerator} {f.candidate.topology} ({f.dtype}, {f.reason}) needs a group "
             f"set of its own: render it with --accelerator {f.accelerator} --dtype {f.dtype}"
             for f in options if f not in usable]
    spec = {"priorities": priorities, "nodePoolAutoCreation": {"enabled": True},
            "activeMigration": {"optimizeRulePriority": True},
            "whenUnsatisfiable": "DoNotScaleUp"}
    return spec, notes


def format_fallbacks(options: list[Fallback]) -> str:
    rows = [("#", "accelerator", "dtype", "topology", "devices", "nodes", "machine type", "why")]
    rows += [(str(i), f.accelerator, f.dtype, f.candidate.topology, str(f.candidate.devices),
              str(f.candidate.nodes), f.candidate.machine_type, f.reason)
             for i, f in enumerate(options, 1)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
