"""LoRA adapters in the registry: an adapter of a model scaled to zero is cold with it (gateways
hold its requests) and a wake for the adapter scales its base."""

from __future__ import annotations

from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore


def registry(tmp_path) -> CellRegistry:
    return CellRegistry(ModelStore(tmp_path / "s.sqlite3"), dead_after=3.0, now=0.0)


def test_an_adapter_of_a_model_at_zero_is_cold_and_wakes_its_base(tmp_path):
    from llmcell.admin.placement import ModelSpec
    from llmcell.protocol.autoscaling import ScalingPolicy

    reg = registry(tmp_path)
    policy = ScalingPolicy.from_json({"min_replicas": 0, "max_replicas": 2})
    reg.publish(ModelSpec("/sax/test/m", "x", "None", 0, 1, policy), 0.0)
    reg.publish(ModelSpec("/sax/test/a", "/adapters/a", "None", 1, 1, base="/sax/test/m"), 0.0)
    assert reg.cold(1.0) == ["/sax/test/m", "/sax/test/a"]
    reg.wake("/sax/test/a", "http://gw", 3, 1.0)  # held requests for the adapter
    assert reg.model("/sax/test/m").replicas >= 1  # its base scales up
