"""Typed objects serialize to the Kubernetes shape: camelCase keys, no nulls, apiVersion/kind."""

from __future__ import annotations

from llmcell.deploy.k8s import (Container, ObjectMeta, PodDisruptionBudget, Probe, Service,
                                ServicePort, ServiceSpec, Volume, in_kind_order, to_dict)


def test_fields_become_camel_case_and_none_is_dropped():
    c = Container("c", "img", readiness_probe=Probe.command(["true"], period_seconds=3))
    d = to_dict(c)
    assert d["readinessProbe"] == {"exec": {"command": ["true"]}, "periodSeconds": 3,
                                   "timeoutSeconds": 5, "failureThreshold": 3}
    assert "command" not in d and "livenessProbe" not in d
    assert d["securityContext"]["allowPrivilegeEscalation"] is False


def test_empty_dicts_are_kept_and_dict_keys_pass_through():
    assert to_dict(Volume("tmp", empty_dir={})) == {"name": "tmp", "emptyDir": {}}
    meta = ObjectMeta("x", labels={"app.kubernetes.io/name": "llmcell", "snake_key": "v"})
    assert to_dict(meta)["labels"] == {"app.kubernetes.io/name": "llmcell", "snake_key": "v"}


def test_top_level_objects_lead_with_api_version_and_kind():
    svc = Service(ObjectMeta("s"), ServiceSpec({"a": "b"}, [ServicePort("http", 80, "http")]))
    assert list(to_dict(svc))[:3] == ["apiVersion", "kind", "metadata"]
    pdb = PodDisruptionBudget(ObjectMeta("p"), {"minAvailable": 1})
    assert to_dict(pdb)["apiVersion"] == "policy/v1"
    assert [type(o) for o in in_kind_order([pdb, svc])] == [Service, PodDisruptionBudget]
