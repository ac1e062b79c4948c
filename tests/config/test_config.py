"""Every component's configuration refuses a bad value with a ValueError that names it."""

from __future__ import annotations

import pytest

from llmcell.config.admin import AdminConfig
from llmcell.config.engine import EngineConfig
from llmcell.config.gateway import GatewayConfig
from llmcell.config.server import ServerConfig


@pytest.mark.parametrize("kwargs,field", [
    ({"dtype": "fp8"}, "dtype"), ({"quantization": "int4"}, "quantization"),
    ({"device": "tpu"}, "device"), ({"block_size": 0}, "block_size"),
    ({"kv_cache_memory": -1}, "kv_cache_memory"), ({"threads": -1}, "threads"),
    ({"max_num_seqs": 0}, "max_num_seqs"), ({"model": ""}, "model"),
    ({"step_hold_ms": -1}, "step_hold_ms"),
])
def test_invalid_engine_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)


@pytest.mark.parametrize("cls,kwargs,field", [
    (ServerConfig, {"port": 70000}, "port"), (ServerConfig, {"engine": "tgi"}, "engine"),
    (ServerConfig, {"max_queue": -1}, "max_queue"), (ServerConfig, {"engine_nice": 20},
                                                     "engine_nice"),
    (ServerConfig, {"admin": "ftp://x"}, "admin"), (ServerConfig, {"drain_timeout": -1},
                                                    "drain_timeout"),
    (GatewayConfig, {"policy": "random"}, "policy"), (GatewayConfig, {"sax_compat": "v3"},
                                                      "sax_compat"),
    (GatewayConfig, {"retries": 11}, "retries"), (GatewayConfig, {"bounded_load": 0.5},
                                                  "bounded_load"),
    (AdminConfig, {"port": -1}, "port"), (AdminConfig, {"heartbeat_interval": 0},
                                          "heartbeat_interval"),
    (AdminConfig, {"missed_heartbeats": 0}, "missed_heartbeats"),
])
def test_invalid_component_config_names_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
