"""`llmcell render`: build every object of a cell from a `RenderConfig`, then serialize at the edge.

Objects come out in a fixed kind order (`k8s.KIND_ORDER`), so the same flags always give the same
bytes. Output is one multi-document YAML stream, or a directory with one file per object plus a
`kustomization.yaml` listing them in that order.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from llmcell.config.deploy import RenderConfig
from llmcell.deploy.common import Cell
from llmcell.deploy.control_plane import admin, gateway, identity, network_policies
from llmcell.deploy.endpoint_picker import endpoint_picker
from llmcell.deploy.groups import capacity_fallbacks, model_servers
from llmcell.deploy.k8s import in_kind_order, to_dict
from llmcell.deploy.operations import autoscaling, monitoring, routes


def build(config: RenderConfig) -> list:
    cell = Cell(config)
    objects = [*identity(cell), *admin(cell), *gateway(cell), *endpoint_picker(cell),
               *model_servers(cell), *capacity_fallbacks(cell),
               *autoscaling(cell), *monitoring(cell), *network_policies(cell), *routes(cell)]
    return in_kind_order(objects)


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (scripts, the dashboard JSON)."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def manifests(config: RenderConfig) -> list[dict]:
    return [to_dict(o) for o in build(config)]


def render_stream(config: RenderConfig) -> str:
    return "".join(f"---\n{to_yaml(doc)}" for doc in manifests(config))


def file_name(index: int, doc: dict) -> str:
    return f"{index:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"


def render_dir(config: RenderConfig, out: Path) -> list[Path]:
    """Write one file per object and a kustomization.yaml; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    docs = manifests(config)
    for i, doc in enumerate(docs, 1):
        path = out / file_name(i, doc)
        path.write_text(to_yaml(doc))
        written.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [p.name for p in written]}
    path = out / "kustomization.yaml"
    path.write_text(to_yaml(kustomization))
    return [*written, path]
