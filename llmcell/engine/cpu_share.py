"""How much CPU the engine may use on a shared node, read before torch starts its threads.

A Kubernetes node is always shared. The engine sizes its compute threads to what the process may
really run on: its CPU affinity, capped by the tightest CFS quota of its cgroup (a pod's CPU
limit), not the host's core count; more threads than that only queue behind the quota. And
OpenMP's waiting threads spin briefly (`GOMP_SPINCOUNT`) before they sleep: with libgomp's default
a thread whose sibling was preempted burns its core for milliseconds at every barrier, which
halves the engine's throughput beside a busy co-tenant. No torch import here: the spin count must
be in the environment before libgomp loads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """{controller: path} from /proc/self/cgroup ("" is the cgroup v2 unified hierarchy)."""
    out: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _ancestors(root: Path, path: str) -> list[Path]:
    """root/path and every folder above it up to root (a limit anywhere above applies)."""
    folders = [root]
    for part in [p for p in path.split("/") if p]:
        folders.append(folders[-1] / part)
    return folders


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_limit(root: Path = CGROUP_ROOT,
                     proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in cores (2.5 for a
    `limits.cpu: 2500m` pod), or None where none is set. cgroup v2 first, then v1's cpu controller.
    """
    own = _own_cgroups(proc_cgroup)
    limits: list[float] = []
    if "" in own:
        limits += [x for f in _ancestors(root, own[""]) if (x := _v2_limit(f)) is not None]
    for mount in ("cpu", "cpu,cpuacct"):
        if "cpu" in own and (root / mount).is_dir():
            folders = _ancestors(root / mount, own["cpu"])
            limits += [x for f in folders if (x := _v1_limit(f)) is not None]
            break
    return min(limits) if limits else None


def usable_cpus(limit: float | None = None, affinity: int | None = None) -> int:
    """Compute threads to run: the CPUs this process may be scheduled on, capped by the cgroup's
    quota rounded down (at least 1): a thread beyond the quota only waits for it."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if limit is None:
        limit = cgroup_cpu_limit()
    cpus = affinity if limit is None else min(affinity, math.floor(limit))
    return max(1, cpus)


def set_openmp_spin(spin_count: int, environ: dict[str, str] | None = None) -> bool:
    """Put `GOMP_SPINCOUNT` in the environment for libgomp (torch's OpenMP), unless the user set
    it or `OMP_WAIT_POLICY` already; 0 leaves the runtime's default. Has effect only before torch
    is first imported in this process (or in processes started after). True when it was set."""
    env = os.environ if environ is None else environ
    if spin_count <= 0 or "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return False
    env["GOMP_SPINCOUNT"] = str(spin_count)
    return True
