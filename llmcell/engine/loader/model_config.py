"""A model's shape (`ModelConfig`) from its source's headers alone, without torch: a GGUF file's
metadata or a Hugging Face directory's config.json. The loader builds on it; the admin reads it to
check a LoRA adapter against its base at publish."""

from __future__ import annotations

import json
from pathlib import Path

from llmcell.encryption import is_encrypted
from llmcell.engine.loader.gguf_file import GGUFError, GGUFFile
from llmcell.engine.models.config import ModelConfig


def read_model_config(path: Path) -> ModelConfig | None:
    """The shape of a GGUF file or model directory (`registry.resolve_model_path` finds an
    alias's file); None for an encrypted file (its header is only read with the master key, by
    the engine)."""
    if path.is_dir():
        return hf_model_config(path)[0]
    if is_encrypted(path):
        return None
    return gguf_model_config(GGUFFile(path))


def gguf_model_config(f: GGUFFile) -> ModelConfig:
    arch = f.require("general.architecture")
    if arch not in ("llama", "mistral", "qwen2"):
        raise GGUFError(f"{f.path}: architecture {arch!r} is not supported (llama, mistral, qwen2)")
    heads = int(f.require(f"{arch}.attention.head_count"))
    hidden = int(f.require(f"{arch}.embedding_length"))
    tokens = f.get("tokenizer.ggml.tokens")
    vocab = int(f.get(f"{arch}.vocab_size", len(tokens) if tokens is not None else 0))
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(f.require(f"{arch}.feed_forward_length")),
        num_layers=int(f.require(f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(f.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(f.get(f"{arch}.attention.key_length", hidden // heads)),
        rope_theta=float(f.get(f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(f.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        max_position_embeddings=int(f.get(f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in f.tensors,
        attention_bias="blk.0.attn_q.bias" in f.tensors,
        name=str(f.get("general.name", f.path.stem)),
    )



def hf_model_config(directory: Path) -> tuple[ModelConfig, list[int]]:
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing (not a Hugging Face model directory)")
    try:
        c = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    archs = c.get("architectures") or []
    if c.get("model_type") not in ("llama", "mistral", "qwen2") and not any(
            a in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM") for a in archs):
        raise ValueError(f"{path}: model_type {c.get('model_type')!r} is not supported")
    heads = int(c["num_attention_heads"])
    scaling = c.get("rope_scaling")
    eos = c.get("eos_token_id")
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    return ModelConfig(
        vocab_size=int(c["vocab_size"]),
        hidden_size=int(c["hidden_size"]),
        intermediate_size=int(c["intermediate_size"]),
        num_layers=int(c["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
        rope_theta=float(c.get("rope_theta", 10000.0)),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-5)),
        max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        attention_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
        rope_scaling=tuple(sorted(scaling.items())) if isinstance(scaling, dict) else None,
        name=directory.name,
    ), eos_ids
