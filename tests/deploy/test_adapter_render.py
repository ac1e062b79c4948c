"""`llmcell render --adapter-pvc`: the LoRA adapters' claim is mounted read-only at /adapters on
the model servers and on the admin, which reads adapters from it at publish (`--model-root`)."""

from __future__ import annotations

from llmcell.cli import build_parser
from llmcell.deploy.cli import render_config
from llmcell.deploy.render import manifests

from .test_render import CASES


def test_adapter_volume_reaches_servers_and_admin():
    args = build_parser().parse_args(["render", *CASES["gke-gpu-builtin-l4-8b"]])
    docs = manifests(render_config(args))
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("StatefulSet",
                                                                     "LeaderWorkerSet")}
    admin = next(d for n, d in pods.items() if n.endswith("admin"))
    spec = admin["spec"]["template"]["spec"]
    assert {"name": "adapters", "persistentVolumeClaim": {"claimName": "lora-adapters",
                                                           "readOnly": True}} in spec["volumes"]
    args = spec["containers"][0]["args"]
    assert args[args.index("--model-root") + 1] == "/adapters"
    group = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    leader = group["spec"]["leaderWorkerTemplate"].get("leaderTemplate") or \
        group["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    mounts = leader["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "adapters", "mountPath": "/adapters", "readOnly": True} in mounts
