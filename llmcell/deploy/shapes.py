"""A model's shape as the planner needs it: parameters, and what one token costs in KV cache.

Read from a GGUF header or a Hugging Face `config.json` (+ safetensors headers) without loading
weights; or, with only a parameter count, borrowed from a well-known model of about that size (the
planner says which). Explicit `--layers/--kv-heads/--head-dim` always win.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from llmcell.config.deploy import PlanConfig


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: int
    layers: int
    kv_heads: int
    head_dim: int
    source: str
    """Where the shape came from: the file read, or the typical model it was borrowed from."""

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


# (parameters, layers, KV heads, head dim, name): public configs of common dense models.
TYPICAL_SHAPES = (
    (135e6, 30, 3, 64, "SmolLM2-135M"),
    (1.24e9, 16, 8, 64, "Llama-3.2-1B"),
    (3.2e9, 28, 8, 128, "Llama-3.2-3B"),
    (8.0e9, 32, 8, 128, "Llama-3.1-8B"),
    (27e9, 46, 16, 128, "Gemma-2-27B"),
    (70.6e9, 80, 8, 128, "Llama-3.1-70B"),
    (175e9, 96, 96, 128, "GPT-3-175B"),
    (405e9, 126, 8, 128, "Llama-3.1-405B"),
)


def typical_shape(params: float) -> tuple[int, int, int, str]:
    """Layers, KV heads, head dim and name of the common model nearest in log(parameters)."""
    best = min(TYPICAL_SHAPES, key=lambda s: abs(math.log(s[0]) - math.log(params)))
    return best[1], best[2], best[3], best[4]


def _from_gguf(path: Path) -> ModelShape:
    from llmcell.engine.loader.gguf_file import GGUFFile

    g = GGUFFile(path)
    arch = g.require("general.architecture")
    heads = int(g.require(f"{arch}.attention.head_count"))
    hidden = int(g.require(f"{arch}.embedding_length"))
    head_dim = int(g.get(f"{arch}.attention.key_length", hidden // heads))
    params = sum(math.prod(t.shape) for t in g.tensors.values())
    return ModelShape(str(g.get("general.name", path.stem)), params,
                      int(g.require(f"{arch}.block_count")),
                      int(g.get(f"{arch}.attention.head_count_kv", heads)), head_dim, str(path))


def _params_from_config(c: dict) -> int:
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c.get("vocab_size", 32000)
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim") or h // heads
    ffn = c.get("intermediate_size", 4 * h)
    attention = h * heads * hd * 2 + h * kv * hd * 2
    embed = vocab * h * (1 if c.get("tie_word_embeddings", False) else 2)
    return layers * (attention + 3 * h * ffn) + embed


def _from_hf_dir(path: Path) -> ModelShape:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"model={str(path)!r}: a Hugging Face directory needs a config.json")
    c = json.loads(config_file.read_text())
    c = c.get("text_config", c)
    try:
        heads = c["num_attention_heads"]
        weights = sorted(path.glob("*.safetensors"))
        if weights:
            from llmcell.admin.sizing import count_params
            params = count_params(path)
        else:
            params = _params_from_config(c)
        return ModelShape(c.get("_name_or_path") or path.name, params, c["num_hidden_layers"],
                          c.get("num_key_value_heads", heads),
                          c.get("head_dim") or c["hidden_size"] // heads, str(config_file))
    except KeyError as e:
        raise ValueError(f"{config_file}: missing {e.args[0]!r}") from None


def model_shape(config: PlanConfig) -> tuple[ModelShape, list[str]]:
    """The shape to plan with, and notes on where any part of it was assumed."""
    notes: list[str] = []
    if config.params is not None:
        layers, kv_heads, head_dim, like = typical_shape(config.params)
        shape = ModelShape(f"{config.params / 1e9:g}B-parameter model", int(config.params),
                           layers, kv_heads, head_dim, f"--params, KV shape of {like}")
        if None in (config.layers, config.kv_heads, config.head_dim):
            notes.append(f"KV cache sized with the shape of {like} ({layers} layers, {kv_heads} "
                         f"KV heads, head dim {head_dim}), typical for {config.params / 1e9:g}B "
                         "parameters; pass --layers/--kv-heads/--head-dim for the exact figure")
    else:
        from llmcell.engine.loader.registry import resolve_model_path

        path = resolve_model_path(config.model)
        shape = _from_hf_dir(path) if path.is_dir() else _from_gguf(path)
    overrides = {k: getattr(config, k) for k in ("layers", "kv_heads", "head_dim")
                 if getattr(config, k) is not None}
    return replace(shape, **overrides), notes
