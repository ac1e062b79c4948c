"""Every name a rendered object points at is an object the same render creates (or one the
cluster's owner provides and the flags named: Secrets, the Gateway, the PVC of weights), and
every selector selects pods the render creates: over the whole matrix of test_render.py."""

from __future__ import annotations

import pytest

from llmcell.deploy.render import manifests

from .test_render import CASES, config_for

EXTERNAL_KINDS = {"Secret", "Gateway", "PersistentVolumeClaim"}


def pod_templates(docs: list[dict]) -> list[dict]:
    """The metadata of every pod the render would start."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet"):
            out.append(spec["template"]["metadata"])
        elif d["kind"] == "LeaderWorkerSet":
            lwt = spec["leaderWorkerTemplate"]
            out += [t["metadata"] for key in ("leaderTemplate", "workerTemplate")
                    if (t := lwt.get(key))]
    return out


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def references(docs: list[dict]):
    """(what points, the kind and name it points at, a port or None)."""
    for d in docs:
        where, spec = f"{d['kind']}/{d['metadata']['name']}", d.get("spec", {})
        if d["kind"] == "InferencePool":
            ref = spec["endpointPickerRef"]
            yield where, ref.get("kind", "Service"), ref["name"], ref["port"]["number"]
        if d["kind"] == "HTTPRoute":
            for rule in spec["rules"]:
                for ref in rule["backendRefs"]:
                    yield where, ref.get("kind", "Service"), ref["name"], ref.get("port")
        if d["kind"] == "RoleBinding":
            yield where, d["roleRef"]["kind"], d["roleRef"]["name"], None
            for subject in d["subjects"]:
                yield where, subject["kind"], subject["name"], None
        for key in ("scaleTargetRef",):
            if key in spec:
                yield where, spec[key]["kind"], spec[key]["name"], None
    for d in docs:
        for pod in _pod_specs(d):
            where = f"{d['kind']}/{d['metadata']['name']}"
            if pod.get("serviceAccountName"):
                yield where, "ServiceAccount", pod["serviceAccountName"], None
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    yield where, "ConfigMap", volume["configMap"]["name"], None


def _pod_specs(d: dict) -> list[dict]:
    spec = d.get("spec", {})
    if d["kind"] in ("Deployment", "StatefulSet"):
        return [spec["template"]["spec"]]
    if d["kind"] == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        return [t["spec"] for key in ("leaderTemplate", "workerTemplate") if (t := lwt.get(key))]
    return []


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_reference_names_an_object_of_the_render(case):
    docs = manifests(config_for(CASES[case]))
    made = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for where, kind, name, port in references(docs):
        if kind in EXTERNAL_KINDS:
            continue
        assert (kind, name) in made, f"{where} points at {kind}/{name}, which is not rendered"
        if port is not None and kind == "Service":
            ports = [p["port"] for p in made[(kind, name)]["spec"]["ports"]]
            assert port in ports, f"{where} points at port {port} of {name} ({ports})"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_selector_selects_rendered_pods(case):
    docs = manifests(config_for(CASES[case]))
    pods = [t.get("labels", {}) for t in pod_templates(docs)]
    for d in docs:
        spec, where = d.get("spec", {}), f"{d['kind']}/{d['metadata']['name']}"
        selector = None
        if d["kind"] in ("Service", "InferencePool"):
            selector = spec.get("selector")
            selector = selector.get("matchLabels", selector) if selector else None
        elif d["kind"] in ("PodDisruptionBudget", "PodMonitor", "PodMonitoring"):
            selector = spec["selector"]
        elif d["kind"] == "NetworkPolicy" and spec["podSelector"]:
            selector = spec["podSelector"]
        if selector is not None:
            assert any(selects(selector, labels) for labels in pods), \
                f"{where} selects no rendered pod: {selector}"
        if d["kind"] == "ServiceMonitor":
            services = [s["metadata"].get("labels", {}) for s in docs if s["kind"] == "Service"]
            assert any(selects(spec["selector"], labels) for labels in services), where


def test_the_pool_routes_generation_through_the_picker_and_the_rest_to_the_gateway():
    docs = manifests(config_for(CASES["cpu-builtin-epp-kv"]))
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    pool_rule, rest = route["spec"]["rules"]
    assert pool_rule["backendRefs"][0]["kind"] == "InferencePool"
    assert {m["path"]["value"] for m in pool_rule["matches"]} == {"/v1/chat/completions",
                                                                  "/v1/completions"}
    assert rest["backendRefs"][0]["name"].endswith("-gateway")
    (epp,) = [d for d in docs if d["kind"] == "Deployment" and
              d["metadata"]["name"].endswith("-epp")]
    args = epp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--policy") + 1] == "kv_affinity" and "--self-signed" in args
    probe = epp["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["grpc"] == {"port": 9003, "service": "readiness"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_llmcell_command_line_parses(case):
    """A flag the render passes that the CLI does not know would crash the pod at start."""
    from llmcell.cli import build_parser

    parser = build_parser()
    for d in manifests(config_for(CASES[case])):
        for pod in _pod_specs(d):
            for c in pod["containers"] + pod.get("initContainers", []):
                if c.get("command") != ["llmcell"]:
                    continue
                args = [a.replace("$(POD_IP)", "10.0.0.1") for a in c["args"]]
                try:
                    parser.parse_args(args)
                except SystemExit:
                    raise AssertionError(f"{d['kind']}/{d['metadata']['name']}/{c['name']}: "
                                         f"llmcell {' '.join(args)}") from None


def test_admins_on_postgresql_are_two_and_only_the_leader_is_ready():
    docs = manifests(config_for(CASES["cpu-builtin-ha-admin"]))
    (admin,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert admin["spec"]["replicas"] == 2
    container = admin["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--state") + 1] == "$(LLMCELL_STATE_URL)"
    assert "--advertise" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["LLMCELL_STATE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "llmcell-postgres", "key": "url", "optional": False}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-admin")
               for d in docs)
    with pytest.raises(ValueError, match="batch-blobs"):
        config_for(["--target", "cpu", "--state-secret", "pg"])
