"""Validate rendered objects: built-in kinds with kubernetes-validate (Kubernetes 1.37, strict),
custom resources against their CRDs in ../shared/crds and tests/deploy/crds (typos caught by
closing every schema node).

The CRD folder comes from LLMCELL_CRDS (default: ../shared/crds beside the project root); tests
that need it skip with a clear message when it is absent.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.37.0"
CRDS = Path(os.environ.get("LLMCELL_CRDS",
                           Path(__file__).resolve().parents[3] / "shared" / "crds"))
LOCAL_CRDS = Path(__file__).resolve().parent / "crds"
"""CRDs the shared folder lacks (their provenance in its README)."""
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1",
                  "rbac.authorization.k8s.io/v1")


def _strict(node):
    """Deep copy of an OpenAPI schema where every object with properties rejects unknown keys."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
            node["pattern"] = "(?i)^" + node["pattern"][len("^(?i)"):]
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


FALLBACK = {("cert-manager.io/v1", "Certificate"): {
    "type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["secretName", "issuerRef"], "properties": {
            "secretName": {"type": "string"},
            "issuerRef": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "kind": {"type": "string"},
                "group": {"type": "string"}}},
            "dnsNames": {"type": "array", "items": {"type": "string"}},
            "usages": {"type": "array", "items": {"type": "string", "enum": [
                "server auth", "client auth", "digital signature", "key encipherment"]}},
            "duration": {"type": "string"}, "renewBefore": {"type": "string"},
            "privateKey": {"type": "object", "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]}}}}}}}}
"""The part of cert-manager's Certificate schema the renders use, closed like the CRDs (the
CRD folder has no cert-manager CRD; its field names are cert-manager.io/v1's)."""


@functools.lru_cache(maxsize=None)
def _crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")) + sorted(LOCAL_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return schemas


def validate(obj: dict) -> None:
    """Raise on the first schema violation of `obj` (a built-in kind or a known CRD kind)."""
    if obj["apiVersion"] in BUILTIN_GROUPS:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return
    schema = _crd_schemas().get((obj["apiVersion"], obj["kind"])) or _strict(copy.deepcopy(
        FALLBACK.get((obj["apiVersion"], obj["kind"]))))
    if schema is None:
        raise AssertionError(f"no CRD for {obj['apiVersion']} {obj['kind']} in {CRDS}")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft4Validator(schema).validate(body)
