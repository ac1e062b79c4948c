"""`llmcell render`: a matrix of renders validated against Kubernetes 1.37 and the CRDs, pinned by
golden files, plus the seed's facts and the security rules every pod must follow.

Regenerate the golden files after an intended change with LLMCELL_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmcell.cli import build_parser
from llmcell.deploy.cli import render_config
from llmcell.deploy.render import manifests, render_dir, render_stream

from .validation import CRDS, validate

GOLDEN = Path(__file__).with_name("golden")

CASES: dict[str, list[str]] = {
    "gke-tpu-builtin-v5e-175b": ["--target", "gke-tpu", "--params", "175e9"],
    "gke-tpu-vllm-v5e-175b-keda": ["--target", "gke-tpu", "--params", "175e9", "--engine", "vllm",
                                   "--replicas", "2", "--autoscaler", "keda",
                                   "--served-model", "/models/sax-175b", "--model-pvc", "weights"],
    "gke-tpu-vllm-v6e-405b-operator": [
        "--target", "gke-tpu", "--accelerator", "tpu-v6e", "--params", "405e9", "--dtype", "int8",
        "--engine", "vllm", "--monitoring", "prometheus-operator", "--gateway-api",
        "--inference-pool", "--autoscaler", "hpa"],
    "gke-tpu-vllm-v5e-175b-fallbacks": ["--target", "gke-tpu", "--params", "175e9", "--engine",
                                        "vllm", "--fallbacks"],
    "gke-gpu-vllm-h100-70b-fallbacks-spot": ["--target", "gke-gpu", "--accelerator",
                                             "nvidia-h100-80gb", "--params", "70e9", "--engine",
                                             "vllm", "--fallbacks", "--spot"],
    "gke-tpu-builtin-2x4-bare": ["--target", "gke-tpu", "--topology", "2x4", "--monitoring",
                                 "none", "--autoscaler", "none"],
    "gke-gpu-builtin-l4-8b": ["--target", "gke-gpu", "--params", "8e9",
                              "--gcp-service-account", "llmcell@proj.iam.gserviceaccount.com",
                              "--adapter-pvc", "lora-adapters"],
    "gke-gpu-vllm-h100-70b-spot": ["--target", "gke-gpu", "--accelerator", "nvidia-h100-80gb",
                                   "--params", "70e9", "--engine", "vllm", "--spot",
                                   "--monitoring", "prometheus-operator", "--autoscaler", "keda"],
    "gke-gpu-vllm-h100-405b-2x8": ["--target", "gke-gpu", "--accelerator", "nvidia-h100-80gb",
                                   "--params", "405e9", "--engine", "vllm",
                                   "--hf-token-secret", "hf-token",
                                   "--served-model", "meta-llama/Llama-3.1-405B-Instruct"],
    "gke-gpu-builtin-spot-bare": ["--target", "gke-gpu", "--params", "8e9", "--spot",
                                  "--monitoring", "none", "--autoscaler", "none"],
    "tke-gpu-builtin-a100-70b": ["--target", "tke-gpu", "--params", "70e9",
                                 "--monitoring", "prometheus-operator"],
    "tke-gpu-vllm-spot-keda": ["--target", "tke-gpu", "--params", "70e9", "--engine", "vllm",
                               "--spot", "--spot-label", "tke.cloud.tencent.com/spot=true",
                               "--gpus-per-pod", "8", "--memory", "128Gi", "--autoscaler", "keda",
                               "--monitoring", "prometheus-operator"],
    "cpu-builtin-smollm2": ["--target", "cpu", "--monitoring", "prometheus-operator",
                            "--api-keys-secret", "llmcell-api-keys", "--tls-secret", "llmcell-tls",
                            "--gateway-api"],
    "cpu-builtin-ha-admin": ["--target", "cpu", "--state-secret", "llmcell-postgres",
                             "--batch-blobs", "gs://bucket/llmcell"],
    "cpu-builtin-epp-kv": ["--target", "cpu", "--gateway-api", "--inference-pool", "--policy",
                           "kv_affinity"],
    "cpu-vllm-bare": ["--target", "cpu", "--engine", "vllm", "--monitoring", "none",
                      "--autoscaler", "none", "--served-model", "HuggingFaceTB/SmolLM2-135M"],
    "cpu-builtin-gmp-hpa": ["--target", "cpu", "--replicas", "3", "--namespace", "team-a",
                            "--name", "chat", "--image", "registry.example/llmcell:1.2.3",
                            "--autoscaler", "hpa"],
}


def config_for(args: list[str]):
    return render_config(build_parser().parse_args(["render", *args]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_validates_against_kubernetes_and_the_crds(case):
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {CRDS} (set LLMCELL_CRDS to ../shared/crds)")
    for doc in manifests(config_for(CASES[case])):
        try:
            validate(doc)
        except Exception as e:  # name the object in the failure
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {e}") from e


def test_the_validator_rejects_typos_and_float_quantities():
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {CRDS} (set LLMCELL_CRDS to ../shared/crds)")
    docs = manifests(config_for(CASES["gke-tpu-builtin-v5e-175b"]))
    (deployment,) = [copy.deepcopy(d) for d in docs if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(Exception, match="imagePullPolicyy"):
        validate(deployment)
    (lws,) = [copy.deepcopy(d) for d in docs if d["kind"] == "LeaderWorkerSet"]
    lws["spec"]["leaderWorkerTemplate"]["sizee"] = 8
    with pytest.raises(Exception, match="sizee"):
        validate(lws)
    (lws,) = [copy.deepcopy(d) for d in docs if d["kind"] == "LeaderWorkerSet"]
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0][
        "resources"]["limits"]["cpu"] = 0.5
    with pytest.raises(Exception, match="0.5"):
        validate(lws)


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_matches_its_golden_file(case):
    config = config_for(CASES[case])
    text = render_stream(config)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("LLMCELL_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with LLMCELL_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{case} differs from {golden}"
    assert render_stream(config) == text  # rendering twice is byte-identical


def test_cli_output_is_byte_identical_across_processes():
    args = ["render", *CASES["gke-tpu-vllm-v5e-175b-keda"]]
    outs = []
    for seed in ("1", "2"):
        r = subprocess.run([sys.executable, "-m", "llmcell.cli", *args], capture_output=True,
                           timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] == (GOLDEN / "gke-tpu-vllm-v5e-175b-keda.yaml").read_bytes()


def test_kinds_come_in_the_fixed_order():
    kinds = [d["kind"] for d in manifests(config_for(CASES["gke-tpu-vllm-v6e-405b-operator"]))]
    order = ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service",
             "StatefulSet", "Deployment", "LeaderWorkerSet", "PodDisruptionBudget",
             "HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitor", "PrometheusRule",
             "NetworkPolicy", "HTTPRoute", "InferencePool"]
    assert list(dict.fromkeys(kinds)) == order


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_seed_facts_v5e_4x8():
    docs = manifests(config_for(CASES["gke-tpu-builtin-v5e-175b"]))
    (lws,) = by_kind(docs, "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 8  # 32 chips / 4 per ct5lp-hightpu-4t node
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["metadata"]["annotations"] == {
        "leaderworkerset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
    for role in ("leaderTemplate", "workerTemplate"):
        spec = template[role]["spec"]
        assert spec["nodeSelector"] == {
            "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
            "cloud.google.com/gke-tpu-topology": "4x8"}
        assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in (
            spec["tolerations"])
        (container,) = spec["containers"]
        assert container["resources"]["requests"]["google.com/tpu"] == "4"
        assert container["resources"]["limits"]["google.com/tpu"] == "4"
        assert container["args"][0] == "server"
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in (
            spec["volumes"])
    gateway = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("gateway"))
    assert gateway["spec"]["type"] == "LoadBalancer"
    assert gateway["spec"]["ports"] == [{"name": "http", "port": 8888, "targetPort": "http",
                                         "protocol": "TCP"}]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"] == 8888
    # the admin owns the groups' count (no HPA beside it): its args name the group set, and its
    # Role may patch the set's scale subresource
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    (admin,) = by_kind(docs, "StatefulSet")
    assert admin["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    args = admin["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--bytes-per-param" in args
    assert args[args.index("--scale-groups") + 1] == lws["metadata"]["name"] == "llmcell-ms"
    (role,) = by_kind(docs, "Role")
    assert {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets/scale"],
            "verbs": ["get", "patch", "update"]} in role["rules"]
    hpa_docs = manifests(config_for(CASES["gke-tpu-builtin-v5e-175b"] + ["--autoscaler", "hpa"]))
    (hpa,) = by_kind(hpa_docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "leaderworkerset.x-k8s.io/v1",
                                             "kind": "LeaderWorkerSet", "name": "llmcell-ms"}
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "prometheus.googleapis.com|llmcell:num_requests_waiting|gauge"


def test_vllm_group_runs_ray_and_joins_the_cell():
    docs = manifests(config_for(CASES["gke-gpu-vllm-h100-405b-2x8"]))
    (lws,) = by_kind(docs, "LeaderWorkerSet")
    t = lws["spec"]["leaderWorkerTemplate"]
    assert t["size"] == 2
    vllm, joiner = t["leaderTemplate"]["spec"]["containers"]
    script = vllm["command"][2]
    assert "ray start --head --port=6379" in script and "LWS_GROUP_SIZE" in script
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in script
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert joiner["args"][:5] == ["server", "--engine", "openai", "--upstream",
                                  "http://127.0.0.1:8080"]
    assert "--admin" in joiner["args"]
    (worker,) = t["workerTemplate"]["spec"]["containers"]
    assert worker["command"][2].startswith("exec ray start --address=$(LWS_LEADER_ADDRESS):6379")
    assert t["leaderTemplate"]["spec"]["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "hf-token", "key": "token", "optional": False}}} in vllm["env"]


def test_tke_defaults_to_the_guide_resources_and_honours_overrides():
    docs = manifests(config_for(CASES["tke-gpu-builtin-a100-70b"]))
    (lws,) = by_kind(docs, "LeaderWorkerSet")
    res = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0][
        "resources"]
    assert res["requests"] == res["limits"] == {"cpu": "16", "memory": "64Gi",
                                                "nvidia.com/gpu": "4"}
    docs = manifests(config_for(CASES["tke-gpu-vllm-spot-keda"]))
    (lws,) = by_kind(docs, "LeaderWorkerSet")
    spec = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert spec["containers"][0]["resources"]["limits"] == {
        "cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}
    assert spec["nodeSelector"] == {"tke.cloud.tencent.com/spot": "true"}
    assert spec["containers"][0]["lifecycle"]["preStop"]
    (scaled,) = by_kind(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_gke_spot_selector_and_toleration():
    docs = manifests(config_for(CASES["gke-gpu-builtin-spot-bare"]))
    spec = by_kind(docs, "LeaderWorkerSet")[0]["spec"]["leaderWorkerTemplate"]["workerTemplate"][
        "spec"]
    assert spec["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in spec["tolerations"]


def pod_templates(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [doc["spec"]["template"]]
    if doc["kind"] == "LeaderWorkerSet":
        t = doc["spec"]["leaderWorkerTemplate"]
        return [t["leaderTemplate"], t["workerTemplate"]]
    return []


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_pod_has_resources_probes_and_runs_as_non_root(case):
    templates = [t for d in manifests(config_for(CASES[case])) for t in pod_templates(d)]
    # admin, gateway, group leader and worker; and the endpoint picker with an InferencePool
    assert len(templates) == 4 + ("--inference-pool" in CASES[case])
    for t in templates:
        spec = t["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            name = f"{t['metadata']['name']}/{c['name']}"
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]), name
            assert "readinessProbe" in c and "livenessProbe" in c, name
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert "privileged" not in sc, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_secret_values_in_output(case):
    docs = manifests(config_for(CASES[case]))
    assert not by_kind(docs, "Secret")
    for d in docs:
        for t in pod_templates(d):
            for c in t["spec"]["containers"]:
                for env in c.get("env", []):
                    if any(w in env["name"] for w in ("TOKEN", "KEY", "PASSWORD", "SECRET")):
                        assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


def test_auth_and_tls_are_wired_from_referenced_secrets():
    """Every llmcell process reads the cell credential from the cell Secret; the admin stores the
    key in --api-keys-secret with the admin role; the gateway serves HTTPS with --tls-secret and
    probes it over HTTPS. Only references: no secret value is in the manifests."""
    docs = manifests(config_for(CASES["cpu-builtin-smollm2"]))
    llmcell = [c for d in docs for t in pod_templates(d) for c in t["spec"]["containers"]
               if c.get("command") == ["llmcell"]]
    assert {c["args"][0] for c in llmcell} == {"admin", "gateway", "server"}
    for c in llmcell:
        env = {e["name"]: e for e in c["env"]}
        ref = env["LLMCELL_CELL_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "llmcell-cell", "key": "token", "optional": False}, c["name"]
    (admin,) = [c for c in llmcell if c["args"][0] == "admin"]
    key = {e["name"]: e for e in admin["env"]}["LLMCELL_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["name"] == "llmcell-api-keys" and key["key"] == "admin-key"
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "llmcell-tls"}} in spec["volumes"]
    gateway = spec["containers"][0]
    args = gateway["args"]
    assert args[args.index("--tls-cert") + 1] == "/etc/llmcell/tls/tls.crt"
    assert args[args.index("--tls-key") + 1] == "/etc/llmcell/tls/tls.key"
    assert gateway["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    plain = manifests(config_for(CASES["cpu-vllm-bare"]))  # no --tls-secret: plain HTTP probes
    (deployment,) = by_kind(plain, "Deployment")
    assert "scheme" not in deployment["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"]["httpGet"]


def test_cert_manager_signs_the_gateways_certificate():
    docs = manifests(config_for(["--target", "cpu", "--cert-manager", "cell-ca",
                                 "--cert-manager-kind", "Issuer"]))
    for doc in docs:
        validate(doc)
    (cert,) = by_kind(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "cell-ca", "kind": "Issuer",
                                         "group": "cert-manager.io"}
    assert "llmcell-gateway.llmcell.svc.cluster.local" in cert["spec"]["dnsNames"]
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": cert["spec"]["secretName"]}} in spec["volumes"]
    assert "--tls-cert" in spec["containers"][0]["args"]
    kinds = [d["kind"] for d in docs]
    assert kinds.index("Certificate") < kinds.index("Deployment")
    with pytest.raises(ValueError, match="cert_manager_kind='Vault'"):
        dataclasses.replace(config_for(["--target", "cpu"]), cert_manager_kind="Vault")


def test_network_policies_admit_only_what_the_cell_needs():
    docs = manifests(config_for(CASES["gke-tpu-builtin-v5e-175b"]))
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    assert policies["llmcell-default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress"],
                                                "ingress": []}
    assert policies["llmcell-gateway"]["ingress"] == [{"ports": [{"protocol": "TCP",
                                                                  "port": 8888}]}]
    server_sources = [peer for rule in policies["llmcell-model-server"]["ingress"]
                      for peer in rule.get("from", [])]
    components = {p.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") for p in server_sources}
    assert components == {"gateway", "admin", "model-server", None}  # None: the scraper namespace
    assert any(p.get("namespaceSelector") == {"matchLabels": {
        "kubernetes.io/metadata.name": "gmp-system"}} for p in server_sources)


def test_output_directory_has_one_file_per_object_and_a_kustomization(tmp_path):
    config = config_for(CASES["gke-gpu-builtin-l4-8b"])
    paths = render_dir(config, tmp_path)
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [p.name for p in paths[:-1]]
    docs = [yaml.safe_load(p.read_text()) for p in paths[:-1]]
    assert docs == manifests(config)
    assert paths[0].name == "01-namespace-llmcell.yaml"


@pytest.mark.parametrize("args, needle", [
    (["--target", "gke-tpu", "--accelerator", "nvidia-l4"], "does not run on target"),
    (["--target", "gke-tpu", "--topology", "3x3"], "topology='3x3' is not offered"),
    (["--target", "gke-gpu", "--params", "8e9", "--dtype", "int4"], "int8 only"),
    (["--target", "tke-gpu", "--spot"], "--spot-label"),
    (["--target", "cpu", "--namespace", "Bad_NS"], "namespace='Bad_NS'"),
    (["--target", "cpu", "--memory", "lots"], "memory='lots'"),
])
def test_bad_render_flags_exit_2_naming_the_value(args, needle):
    r = subprocess.run([sys.executable, "-m", "llmcell.cli", "render", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert r.stdout == ""


def test_the_admin_runs_batches_through_the_gateway_with_its_blob_store():
    docs = manifests(config_for(CASES["gke-tpu-builtin-v5e-175b"] + [
        "--batch-blobs", "gs://team-bucket/llmcell"]))
    (admin,) = [d for d in by_kind(docs, "StatefulSet")
                if d["metadata"]["name"] == "llmcell-admin"]
    args = admin["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--batch-gateway") + 1] == "http://llmcell-gateway.llmcell.svc:8888"
    assert args[args.index("--blobs") + 1] == "gs://team-bucket/llmcell"
    with pytest.raises(ValueError, match="batch_blobs"):
        config_for(CASES["gke-tpu-builtin-v5e-175b"] + ["--batch-blobs", "bucket"])


