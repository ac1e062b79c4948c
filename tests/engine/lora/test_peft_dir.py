"""Adapter directories checked from their headers: what is refused, and the message names it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from llmcell.engine.lora.peft_dir import MAX_RANK, check_adapter, read_adapter
from llmcell.engine.models.config import ModelConfig

BASE = ModelConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, name="tiny")
PREFIX = "base_model.model.model.layers"


def write(tmp_path, config: dict | None = None, tensors: dict | None = None):
    c = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    c.update(config or {})
    (tmp_path / "adapter_config.json").write_text(json.dumps(c))
    if tensors is None:
        tensors = {f"{PREFIX}.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 64), np.float32),
                   f"{PREFIX}.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 4), np.float32),
                   f"{PREFIX}.1.self_attn.v_proj.lora_A.weight": np.zeros((4, 64), np.float32),
                   f"{PREFIX}.1.self_attn.v_proj.lora_B.weight": np.zeros((32, 4), np.float32)}
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    return tmp_path


def test_a_good_adapter(tmp_path):
    info = check_adapter(write(tmp_path), BASE)
    assert (info.rank, info.alpha, info.target_modules) == (4, 8.0, ("q_proj", "v_proj"))
    assert info.scaling(4) == 2.0 and info.num_params == 4 * 64 * 3 + 32 * 4
    assert info.nbytes == (tmp_path / "adapter_model.safetensors").stat().st_size


@pytest.mark.parametrize("config, message", [
    ({"r": 0}, r"r=0 must be an integer in \[1, 256\]"),
    ({"r": MAX_RANK + 1}, "r=257"),
    ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported"),
    ({"use_dora": True}, "use_dora=True"),
    ({"bias": "all"}, "bias='all'"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"target_modules": ["embed_tokens"]}, r"target_modules \['embed_tokens'\]"),
])
def test_refused_configs(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        check_adapter(write(tmp_path, config), BASE)


def test_shape_mismatch_names_the_tensor(tmp_path):
    bad = {f"{PREFIX}.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 96), np.float32),
           f"{PREFIX}.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 4), np.float32)}
    with pytest.raises(ValueError, match=r"layers.0.self_attn.q_proj.lora_A.weight' has shape "
                                         r"\[4, 96\]; the base tiny expects \[4, 64\]"):
        check_adapter(write(tmp_path, tensors=bad), BASE)


def test_layer_beyond_the_base(tmp_path):
    bad = {f"{PREFIX}.5.self_attn.q_proj.lora_A.weight": np.zeros((4, 64), np.float32),
           f"{PREFIX}.5.self_attn.q_proj.lora_B.weight": np.zeros((64, 4), np.float32)}
    with pytest.raises(ValueError, match="is for layer 5; the base has 2 layers"):
        check_adapter(write(tmp_path, tensors=bad), BASE)


def test_not_an_adapter(tmp_path):
    with pytest.raises(ValueError, match="not a PEFT adapter directory"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{")
    with pytest.raises(ValueError, match="no adapter_model.safetensors"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="invalid JSON"):
        read_adapter(tmp_path)
