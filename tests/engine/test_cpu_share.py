"""Thread sizing from the cgroup's CPU quota and the OpenMP spin setting, on fake cgroup trees."""

from __future__ import annotations

import os
import subprocess
import sys

from llmcell.engine import cpu_share


def _tree(tmp_path, proc_lines: str, files: dict[str, str]):
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "cgroup").write_text(proc_lines)
    return tmp_path / "cg", tmp_path / "cgroup"


def test_v2_quota_of_the_pod_and_the_tightest_ancestor(tmp_path):
    root, proc = _tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "cpu.max": "max 100000\n",
        "kubepods/cpu.max": "800000 100000\n",
        "kubepods/pod1/cpu.max": "250000 100000\n",
        "kubepods/pod1/ctr/cpu.max": "max 100000\n"})
    assert cpu_share.cgroup_cpu_limit(root, proc) == 2.5


def test_v1_cpu_controller_quota(tmp_path):
    root, proc = _tree(tmp_path, "4:memory:/x\n3:cpu,cpuacct:/pod\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/pod/cpu.cfs_quota_us": "150000\n",
        "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n"})
    assert cpu_share.cgroup_cpu_limit(root, proc) == 1.5


def test_no_quota_anywhere(tmp_path):
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpu_share.cgroup_cpu_limit(root, proc) is None
    assert cpu_share.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing") is None


def test_threads_follow_the_quota_rounded_down():
    assert cpu_share.usable_cpus(limit=2.5, affinity=16) == 2
    assert cpu_share.usable_cpus(limit=0.5, affinity=16) == 1
    assert cpu_share.usable_cpus(limit=None, affinity=3) == 3
    assert cpu_share.usable_cpus(limit=8.0, affinity=4) == 4
    assert cpu_share.usable_cpus() >= 1


def test_spin_count_is_set_unless_the_user_chose():
    env: dict[str, str] = {}
    assert cpu_share.set_openmp_spin(3000, env) and env == {"GOMP_SPINCOUNT": "3000"}
    env = {"GOMP_SPINCOUNT": "1"}
    assert not cpu_share.set_openmp_spin(3000, env) and env == {"GOMP_SPINCOUNT": "1"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not cpu_share.set_openmp_spin(3000, env) and "GOMP_SPINCOUNT" not in env
    env = {}
    assert not cpu_share.set_openmp_spin(0, env) and env == {}


def test_the_cli_sets_it_before_torch_loads():
    """The CLI module loads without torch, and main sets the spin count before any command runs
    (this one loads torch, then stops at a bad flag value)."""
    probe = ("import os, sys\n"
             "from llmcell import cli\n"
             "loaded = 'torch' in sys.modules\n"
             "rc = cli.main(['generate', 'hi', '--threads', '-1'])\n"
             "print(rc, os.environ.get('GOMP_SPINCOUNT'), loaded)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["2", "3000", "False"]
