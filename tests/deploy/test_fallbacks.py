"""Capacity fallbacks and the admin sizing the groups, as rendered: the seed's 175B on v5e plans
its fallbacks and renders a ComputeClass the groups select (validated against its CRD with the
other renders, tests/deploy/test_render.py's CASES); groups go to zero only when the admin owns
their count."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmcell.deploy.render import manifests
from tests.deploy.test_render import CASES, by_kind, config_for


def test_fallbacks_compute_class_for_the_seed_175b_on_v5e():
    """The seed's 175B on v5e: the plan lists its fallbacks, and the render's ComputeClass tries
    the planned 4x8 slice on demand, then on spot, then the other TPU generations one group can
    run; the groups select the class instead of pinning the accelerator."""
    out = subprocess.run([sys.executable, "-m", "llmcell.cli", "plan", "--params", "175e9",
                          "--accelerator", "tpu-v5e", "--fallbacks"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("fallbacks, in the order")[1]
    assert table.index("tpu-v5e ") < table.index("tpu-v6e") < table.index("nvidia-h100-80gb")
    assert "int8 weights on tpu-v5e" in table
    docs = manifests(config_for(CASES["gke-tpu-vllm-v5e-175b-fallbacks"]))
    (cc,) = by_kind(docs, "ComputeClass")
    assert "namespace" not in cc["metadata"]  # cluster-scoped
    first, second, third = cc["spec"]["priorities"][:3]
    assert first == {"tpu": {"type": "tpu-v5-lite-podslice", "count": 4, "topology": "4x8"},
                     "spot": False}
    assert second == dict(first, spot=True)
    assert third["tpu"]["type"] == "tpu-v6e-slice" and third["tpu"]["count"] == 4
    assert all("gpu" not in p for p in cc["spec"]["priorities"])  # GPUs need another group set
    (lws,) = by_kind(docs, "LeaderWorkerSet")
    spec = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert spec["nodeSelector"] == {"cloud.google.com/compute-class": cc["metadata"]["name"]}
    gpu = manifests(config_for(CASES["gke-gpu-vllm-h100-70b-fallbacks-spot"]))
    (cc,) = by_kind(gpu, "ComputeClass")
    assert cc["spec"]["priorities"][0]["spot"] is True  # --spot: spot first
    assert cc["spec"]["priorities"][0]["gpu"]["type"] == "nvidia-h100-80gb"
    with pytest.raises(ValueError, match="GKE target"):
        config_for(["--target", "cpu", "--fallbacks"])


def test_groups_go_to_zero_only_when_the_admin_sizes_them():
    docs = manifests(config_for(["--target", "cpu", "--min-replicas", "0"]))
    (admin,) = by_kind(docs, "StatefulSet")
    args = admin["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--min-groups") + 1] == "0"
    with pytest.raises(ValueError, match="only with --autoscaler admin"):
        config_for(["--target", "cpu", "--min-replicas", "0", "--autoscaler", "hpa"])
