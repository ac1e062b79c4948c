"""The admin sizing the model-server LeaderWorkerSet (the one owner of replica counts on
Kubernetes), against a fake API server: the request it sends checked against the API's shapes
(the scale subresource's path, a merge patch of `spec.replicas`, the service account's token),
nothing sent when nothing changed, a refusal retried, and the count following the published
models."""

from __future__ import annotations

import asyncio
import json

import httpx
import kubernetes_validate
import yaml
from pathlib import Path

from llmcell.admin.group_scaler import GroupScaler, groups_wanted, scale_patch
from llmcell.admin.placement import ModelSpec

CRD = Path(__file__).resolve().parents[2].parent / "shared/crds" / \
    "leaderworkerset.x-k8s.io_leaderworkersets.yaml"


def spec(model: str, replicas: int) -> ModelSpec:
    return ModelSpec(model, "smollm2-135m-instruct", "None", replicas, 1 << 30)


class FakeAPI:
    """The part of an API server the admin uses: a LeaderWorkerSet's scale subresource."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.replicas = 1
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"kind": "Status", "code": self.status})
        self.replicas = json.loads(request.content)["spec"]["replicas"]
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                 "metadata": {"name": "cell-ms", "namespace": "team-a"},
                 "spec": {"replicas": self.replicas}, "status": {"replicas": 1}}
        kubernetes_validate.validate(scale, "1.37.0", strict=True)
        return httpx.Response(200, json=scale)


def test_the_request_is_the_scale_subresource_merge_patch():
    p = scale_patch("team-a", "cell-ms", 3)
    assert (p.method, p.path) == (
        "PATCH", "/apis/leaderworkerset.x-k8s.io/v1/namespaces/team-a/leaderworkersets/"
                 "cell-ms/scale")
    assert p.headers["Content-Type"] == "application/merge-patch+json"
    assert p.body == {"spec": {"replicas": 3}}
    # the LeaderWorkerSet CRD serves that subresource, with spec.replicas as its count
    crd = yaml.safe_load(CRD.read_text())
    scale = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"


def test_groups_follow_the_published_replicas_within_bounds():
    assert groups_wanted([spec("/sax/a/x", 2), spec("/sax/a/y", 3)], 1, 16) == 5
    assert groups_wanted([spec("/sax/a/x", 0)], 0, 16) == 0  # scaled to zero: no group
    assert groups_wanted([spec("/sax/a/x", 0)], 1, 16) == 1
    assert groups_wanted([spec("/sax/a/x", 40)], 1, 16) == 16


def test_scaler_sends_once_per_change_with_the_token_and_retries_refusals(tmp_path):
    token = tmp_path / "token"
    token.write_text("sa-token-1\n")
    api = FakeAPI()
    client = httpx.AsyncClient(base_url="https://kubernetes.default.svc",
                               transport=httpx.MockTransport(api))
    scaler = GroupScaler(client, "team-a", "cell-ms", token, least=1, most=8)

    async def scenario():
        assert await scaler.apply([spec("/sax/a/x", 3)]) == 3
        assert await scaler.apply([spec("/sax/a/x", 3)]) is None  # unchanged: nothing sent
        token.write_text("sa-token-2")  # a rotated token is read again
        assert await scaler.apply([spec("/sax/a/x", 1)]) == 1
        api.status = 403
        assert await scaler.apply([spec("/sax/a/x", 2)]) is None  # refused: not recorded
        api.status = 200
        assert await scaler.apply([spec("/sax/a/x", 2)]) == 2  # so it is sent again

    asyncio.run(scenario())
    assert [json.loads(r.content)["spec"]["replicas"] for r in api.requests] == [3, 1, 2, 2]
    assert api.requests[0].headers["authorization"] == "Bearer sa-token-1"
    assert api.requests[1].headers["authorization"] == "Bearer sa-token-2"
    assert all(r.method == "PATCH" for r in api.requests)
