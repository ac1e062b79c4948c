"""What each accelerator offers: memory per device and the shapes GKE sells it in.

Facts from GKE's TPU and GPU tables (docs/gke-accelerators.md). A `Shape` is one way to
get N devices: a TPU slice topology (nodes = chips / chips per VM, as GKE counts them) or a number
of GPUs on a machine type (several machines form one multi-node group). The planner only reads
this table; nothing here knows about models.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9
GiB = 1 << 30


@dataclass(frozen=True)
class Shape:
    topology: str
    """TPU topology (`4x8`), `N` GPUs or `MxN` (M nodes of N GPUs), or a CPU machine type
    (`n2-standard-8`, `2xn2-standard-80`)."""
    devices: int
    nodes: int
    machine_type: str

    @property
    def per_node(self) -> int:
        return self.devices // self.nodes


@dataclass(frozen=True)
class Accelerator:
    name: str
    kind: str
    """tpu, gpu or cpu."""
    device_memory: int
    """Bytes of HBM per chip/GPU; for CPU, bytes of RAM per node of the largest shape."""
    node_label: str
    """GKE node label value (gke-tpu-accelerator or gke-accelerator); empty for CPU."""
    shapes: tuple[Shape, ...]

    def shape(self, topology: str) -> Shape:
        for s in self.shapes:
            if s.topology == topology:
                return s
        raise ValueError(f"topology={topology!r} is not offered for {self.name}; choose one of "
                         f"{', '.join(s.topology for s in self.shapes)}")


def _tpu(name: str, memory: int, label: str, single: list[tuple[str, int, str]],
         multi_machine: str, multi: list[tuple[str, int]]) -> Accelerator:
    shapes = [Shape(t, chips, 1, m) for t, chips, m in single]
    shapes += [Shape(t, nodes * 4, nodes, multi_machine) for t, nodes in multi]
    return Accelerator(name, "tpu", memory, label, tuple(shapes))


def _gpu(name: str, memory: int, label: str, machines: dict[int, str],
         max_nodes: int = 8) -> Accelerator:
    shapes = [Shape(str(n), n, 1, m) for n, m in sorted(machines.items())]
    top = max(machines)
    shapes += [Shape(f"{k}x{top}", k * top, k, machines[top]) for k in range(2, max_nodes + 1)]
    return Accelerator(name, "gpu", memory, label, tuple(shapes))


_CPU_MACHINES = [("n2-standard-2", 8), ("n2-standard-4", 16), ("n2-standard-8", 32),
                 ("n2-standard-16", 64), ("n2-standard-32", 128), ("n2-standard-48", 192),
                 ("n2-standard-64", 256), ("n2-standard-80", 320)]

ACCELERATORS: dict[str, Accelerator] = {
    "tpu-v4": _tpu("tpu-v4", 32 * GiB, "tpu-v4-podslice", [("2x2x1", 4, "ct4p-hightpu-4t")],
                   "ct4p-hightpu-4t",
                   [("2x2x2", 2), ("2x2x4", 4), ("2x4x4", 8), ("4x4x4", 16), ("4x4x8", 32),
                    ("4x8x8", 64), ("8x8x8", 128)]),
    "tpu-v5e": _tpu("tpu-v5e", 16 * GB, "tpu-v5-lite-podslice",
                    [("1x1", 1, "ct5lp-hightpu-1t"), ("2x2", 4, "ct5lp-hightpu-4t"),
                     ("2x4", 8, "ct5lp-hightpu-8t")], "ct5lp-hightpu-4t",
                    [("4x4", 4), ("4x8", 8), ("8x8", 16), ("8x16", 32), ("16x16", 64)]),
    "tpu-v5p": _tpu("tpu-v5p", 95 * GB, "tpu-v5p-slice", [("2x2x1", 4, "ct5p-hightpu-4t")],
                    "ct5p-hightpu-4t",
                    [("2x2x2", 2), ("2x2x4", 4), ("2x4x4", 8), ("4x4x4", 16), ("4x4x8", 32),
                     ("4x8x8", 64)]),
    "tpu-v6e": _tpu("tpu-v6e", 32 * GB, "tpu-v6e-slice",
                    [("1x1", 1, "ct6e-standard-1t"), ("2x2", 4, "ct6e-standard-4t"),
                     ("2x4", 8, "ct6e-standard-8t")], "ct6e-standard-4t",
                    [("4x4", 4), ("4x8", 8), ("8x8", 16), ("8x16", 32), ("16x16", 64)]),
    "nvidia-l4": _gpu("nvidia-l4", 24 * GB, "nvidia-l4",
                      {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48",
                       8: "g2-standard-96"}),
    "nvidia-a100-40gb": _gpu("nvidia-a100-40gb", 40 * GB, "nvidia-tesla-a100",
                             {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g",
                              8: "a2-highgpu-8g"}),
    "nvidia-a100-80gb": _gpu("nvidia-a100-80gb", 80 * GB, "nvidia-a100-80gb",
                             {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g",
                              8: "a2-ultragpu-8g"}),
    "nvidia-h100-80gb": _gpu("nvidia-h100-80gb", 80 * GB, "nvidia-h100-80gb",
                             {1: "a3-highgpu-1g", 2: "a3-highgpu-2g", 4: "a3-highgpu-4g",
                              8: "a3-highgpu-8g"}),
    "cpu": Accelerator("cpu", "cpu", 320 * GB, "", tuple(
        [Shape(m, 1, 1, m) for m, _ in _CPU_MACHINES]
        + [Shape(f"{k}xn2-standard-80", k, k, "n2-standard-80") for k in (2, 4, 8)])),
}
CPU_MEMORY = {m: gb * GB for m, gb in _CPU_MACHINES}


def shape_memory(accel: Accelerator, shape: Shape) -> int:
    """Total device memory of one group in this shape."""
    if accel.kind == "cpu":
        return CPU_MEMORY[shape.machine_type] * shape.nodes
    return accel.device_memory * shape.devices


def accelerator(name: str) -> Accelerator:
    try:
        return ACCELERATORS[name]
    except KeyError:
        raise ValueError(f"accelerator={name!r} is not one of {tuple(ACCELERATORS)}") from None
