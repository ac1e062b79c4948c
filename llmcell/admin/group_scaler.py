"""The admin as the one owner of replica counts on Kubernetes: it sizes the model-server
LeaderWorkerSet (one group per replica) through the API's scale subresource, from what its
autoscaler and the published counts want.

Sans-IO core and a thin client: `groups_wanted` (pure) and `scale_patch` (the request, as data)
are what tests check against the API's shapes; `GroupScaler` sends it with the pod's service
account token (re-read each time: bound tokens rotate). Groups are removed highest index first
(LeaderWorkerSet's order), and placement empties those first (admin/placement.py), so a group
that goes holds no replica; one that still does drains and its replicas move (SIGTERM -> leave).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from llmcell.admin.placement import ModelSpec

API = "/apis/leaderworkerset.x-k8s.io/v1"
MERGE_PATCH = "application/merge-patch+json"


def groups_wanted(specs: list[ModelSpec], least: int, most: int) -> int:
    """One group per replica of every published model (a group runs one model server, which
    holds one replica), within [least, most]."""
    return max(least, min(most, sum(s.replicas for s in specs)))


@dataclass(frozen=True)
class ScalePatch:
    method: str
    path: str
    headers: dict
    body: dict


def scale_patch(namespace: str, name: str, replicas: int) -> ScalePatch:
    """The request that sets a LeaderWorkerSet's group count (its `scale` subresource)."""
    return ScalePatch("PATCH", f"{API}/namespaces/{namespace}/leaderworkersets/{name}/scale",
                      {"Content-Type": MERGE_PATCH, "Accept": "application/json"},
                      {"spec": {"replicas": replicas}})


class GroupScaler:
    def __init__(self, client: httpx.AsyncClient, namespace: str, name: str,
                 token_file: Path | None, least: int, most: int) -> None:
        """`client`: the API server's base URL and CA; `token_file`: the service account's
        token (None: the client authenticates by itself, as a test's fake does)."""
        self.client = client
        self.namespace, self.name = namespace, name
        self.token_file = token_file
        self.least, self.most = least, most
        self.applied: int | None = None
        """The group count last set (None: not yet)."""

    async def apply(self, specs: list[ModelSpec]) -> int | None:
        """Set the group count the published models want, when it changed; the count set, or
        None when nothing was sent or the API refused (retried at the next call)."""
        wanted = groups_wanted(specs, self.least, self.most)
        if wanted == self.applied:
            return None
        patch = scale_patch(self.namespace, self.name, wanted)
        headers = dict(patch.headers)
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        try:
            r = await self.client.request(patch.method, patch.path, headers=headers,
                                          content=json.dumps(patch.body))
            r.raise_for_status()
        except httpx.HTTPError as e:
            print(f"llmcell admin: could not scale {self.namespace}/{self.name} to {wanted} "
                  f"groups ({e!r}); retrying", file=sys.stderr, flush=True)
            return None
        self.applied = wanted
        print(f"llmcell admin: {self.namespace}/{self.name} scaled to {wanted} groups",
              file=sys.stderr, flush=True)
        return wanted
