"""A PEFT LoRA adapter directory, read and checked against a base model's shapes from headers
alone (no torch): what the admin validates at publish and the engine checks before loading.

Accepted: `peft_type` LORA on the attention and MLP projections (q/k/v/o, gate/up/down) of a
Llama-architecture base, standard or rank-stabilised scaling, per-module ranks read from the
tensors. Refused with a ValueError naming what is wrong: another adapter type, DoRA, trained
biases, `modules_to_save` (whole copied layers), embedding or head targets, rank 0 or above
`MAX_RANK`, and any tensor whose shape does not fit the base.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from llmcell.engine.models.config import ModelConfig

MAX_RANK = 256
"""Largest LoRA rank accepted (multi-LoRA serving uses 8-64; above this is a full fine-tune)."""
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_TENSOR = re.compile(r"(?:.*\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?"
                     r"\.weight$")


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    """The configured rank `r` (modules may differ by `rank_pattern`; shapes are checked)."""
    alpha: float
    rslora: bool
    target_modules: tuple[str, ...]
    tensors: dict[str, tuple[int, ...]]
    """Every tensor of the weights file by name, with its shape."""
    nbytes: int
    """Size of the weights file."""
    base_model: str
    """`base_model_name_or_path` as the adapter was trained (informational)."""

    def scaling(self, rank: int) -> float:
        return self.alpha / (math.sqrt(rank) if self.rslora else rank)

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.tensors.values())


def module_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each projection a LoRA may target."""
    h, i = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}


def read_adapter(path: str | Path) -> AdapterInfo:
    """Parse the directory's config and the weights file's header; ValueError when it is not a
    LoRA adapter llmcell can serve."""
    root = Path(path)
    config_file, weights = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not root.is_dir() or not config_file.is_file():
        raise ValueError(f"{root}: not a PEFT adapter directory (no {CONFIG_FILE})")
    if not weights.is_file():
        raise ValueError(f"{root}: no {WEIGHTS_FILE} (adapters must be saved as safetensors)")
    try:
        c = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_file}: invalid JSON ({e})") from None
    if not isinstance(c, dict):
        raise ValueError(f"{config_file}: expected a JSON object")
    if c.get("peft_type") != "LORA":
        raise ValueError(f"{config_file}: peft_type {c.get('peft_type')!r} is not supported "
                         "(only LORA)")
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True)):
        if c.get(key) == bad:
            raise ValueError(f"{config_file}: {key}={bad} is not supported")
    if c.get("bias", "none") != "none":
        raise ValueError(f"{config_file}: bias={c.get('bias')!r} is not supported (only 'none')")
    if c.get("modules_to_save"):
        raise ValueError(f"{config_file}: modules_to_save={c['modules_to_save']!r} is not "
                         "supported (an adapter may only add low-rank deltas)")
    if c.get("alpha_pattern"):
        raise ValueError(f"{config_file}: alpha_pattern is not supported")
    rank = c.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_RANK:
        raise ValueError(f"{config_file}: r={rank!r} must be an integer in [1, {MAX_RANK}]")
    alpha = c.get("lora_alpha", rank)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"{config_file}: lora_alpha={alpha!r} must be a positive number")
    targets = c.get("target_modules")
    if isinstance(targets, str):
        targets = [m for m in MODULES if re.fullmatch(targets, m) or targets == m]
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"{config_file}: target_modules must name projections, got {targets!r}")
    unknown = [m for m in targets if m not in MODULES]
    if unknown:
        raise ValueError(f"{config_file}: target_modules {unknown} are not supported (only "
                         f"{', '.join(MODULES)})")
    tensors = _header(weights)
    return AdapterInfo(root, rank, float(alpha), bool(c.get("use_rslora", False)),
                       tuple(targets), tensors, weights.stat().st_size,
                       str(c.get("base_model_name_or_path") or ""))


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 1024 * 1024:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def lora_pairs(info: AdapterInfo, config: ModelConfig) -> dict[tuple[int, str], tuple[str, str]]:
    """(layer, module) -> (lora_A tensor name, lora_B tensor name), every shape checked against
    the base: ValueError naming the first tensor that does not fit."""
    shapes = module_shapes(config)
    found: dict[tuple[int, str], dict[str, str]] = {}
    for name, shape in info.tensors.items():
        m = _TENSOR.fullmatch(name)
        if m is None:
            raise ValueError(f"{info.path}: tensor {name!r} is not a LoRA weight of a "
                             f"projection ({', '.join(MODULES)})")
        layer, module, which = int(m.group(1)), m.group(2), m.group(3)
        if module not in shapes:
            raise ValueError(f"{info.path}: tensor {name!r} targets {module!r}, not one of "
                             f"{', '.join(MODULES)}")
        if layer >= config.num_layers:
            raise ValueError(f"{info.path}: tensor {name!r} is for layer {layer}; the base has "
                             f"{config.num_layers} layers")
        out_f, in_f = shapes[module]
        if len(shape) != 2:
            raise ValueError(f"{info.path}: tensor {name!r} has shape {list(shape)}, expected "
                             "two dimensions")
        r = shape[0] if which == "A" else shape[1]
        expected = (r, in_f) if which == "A" else (out_f, r)
        if shape != expected or not 1 <= r <= MAX_RANK:
            raise ValueError(f"{info.path}: tensor {name!r} has shape {list(shape)}; the base "
                             f"{config.name or 'model'} expects {list(expected)} with rank in "
                             f"[1, {MAX_RANK}] ({module} is {out_f} x {in_f})")
        found.setdefault((layer, module), {})[which] = name
    pairs = {}
    for key, ab in found.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{info.path}: layer {key[0]} {key[1]} has lora_{next(iter(ab))} "
                             "without its pair")
        if info.tensors[ab["A"]][0] != info.tensors[ab["B"]][1]:
            raise ValueError(f"{info.path}: tensors {ab['A']!r} and {ab['B']!r} disagree on "
                             "the rank")
        pairs[key] = (ab["A"], ab["B"])
    if not pairs:
        raise ValueError(f"{info.path}: {WEIGHTS_FILE} holds no LoRA weights")
    return pairs


def check_adapter(path: str | Path, config: ModelConfig) -> AdapterInfo:
    """Read the adapter and check every tensor against the base's shapes."""
    info = read_adapter(path)
    lora_pairs(info, config)
    return info
