"""Load a Llama-architecture checkpoint into plain float tensors keyed by llmcell's names.

Sources: a GGUF file (dequantized with the `gguf` package, llama.cpp's Q/K rotary permutation
undone) or a Hugging Face directory (`config.json` + `*.safetensors`). The result uses one naming
scheme for both: `embed`, `norm`, `lm_head` and `layers.{i}.{input_norm,q,k,v,q_bias,k_bias,
v_bias,o,post_norm,gate,up,down}`, weights shaped [out, in] as in `torch.nn.Linear`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from gguf import GGMLQuantizationType

from llmcell.engine.loader import weight_cache
from llmcell.engine.loader.dequant import dequantize
from llmcell.engine.loader.gguf_file import GGUFError, GGUFFile, GGUFTensor
from llmcell.tokenizer.tokenizer import Tokenizer
from llmcell.engine.models.config import ModelConfig
from llmcell.engine.loader.model_config import gguf_model_config, hf_model_config

SUPPORTED_GGUF_TYPES = {
    GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1,
    GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q5_K, GGMLQuantizationType.Q6_K,
    GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q5_1,
}
_GGUF_LAYER_NAMES = {
    "attn_norm": "input_norm", "attn_q": "q", "attn_k": "k", "attn_v": "v",
    "attn_output": "o", "ffn_norm": "post_norm", "ffn_gate": "gate", "ffn_up": "up",
    "ffn_down": "down",
}
_HF_LAYER_NAMES = {
    "input_layernorm.weight": "input_norm", "self_attn.q_proj.weight": "q",
    "self_attn.k_proj.weight": "k", "self_attn.v_proj.weight": "v",
    "self_attn.q_proj.bias": "q_bias", "self_attn.k_proj.bias": "k_bias",
    "self_attn.v_proj.bias": "v_bias", "self_attn.o_proj.weight": "o",
    "post_attention_layernorm.weight": "post_norm", "mlp.gate_proj.weight": "gate",
    "mlp.up_proj.weight": "up", "mlp.down_proj.weight": "down",
}

Progress = Callable[[int, int], None]
Keep = Callable[["ModelConfig", str, torch.Tensor], torch.Tensor]
"""Applied to each tensor as it is read (a tensor-parallel rank keeps only its slice)."""


@dataclass
class Checkpoint:
    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: Path


def terminal_progress(label: str) -> Progress:
    """A progress bar on stderr, redrawn in place; prints the elapsed time when done."""
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                         f"{time.monotonic() - start:4.1f}s{end}")
        sys.stderr.flush()

    return report


# ---- GGUF ------------------------------------------------------------------------------------------
def _unpermute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of Q/K rows (interleaved rotary pairs -> HF's halves)."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2)
            .reshape(w.shape).contiguous())


def _dequantize(t: GGUFTensor, path: Path) -> torch.Tensor:
    if t.qtype not in SUPPORTED_GGUF_TYPES:
        raise GGUFError(f"{path}: tensor {t.name} uses unsupported quantization {t.qtype.name}")
    return dequantize(t.data, t.qtype, t.shape)


def load_gguf(path: Path, progress: Progress | None = None, keep: Keep | None = None,
              cache_dir: Path | None = None, data: bytearray | None = None) -> Checkpoint:
    """`cache_dir`: where dequantized weights are kept between starts (`weight_cache.py`);
    `data`: the file's bytes when they are in memory only (a decrypted file: never cached)."""
    f = GGUFFile(path, data)
    if data is not None:
        cache_dir = None  # the cache would hold the weights in the clear
    config = gguf_model_config(f)
    tokenizer = Tokenizer.from_gguf(f, path)
    jobs: list[tuple[str, GGUFTensor, int | None]] = []
    for name, t in f.tensors.items():
        if name == "token_embd.weight":
            jobs.append(("embed", t, None))
        elif name == "output_norm.weight":
            jobs.append(("norm", t, None))
        elif name == "output.weight":
            jobs.append(("lm_head", t, None))
        elif name.startswith("blk."):
            _, idx, kind, suffix = name.split(".", 3)
            if kind not in _GGUF_LAYER_NAMES or suffix not in ("weight", "bias"):
                continue
            ours = _GGUF_LAYER_NAMES[kind] + ("_bias" if suffix == "bias" else "")
            n_head = {"q": config.num_heads, "k": config.num_kv_heads}.get(_GGUF_LAYER_NAMES[kind])
            jobs.append((f"layers.{idx}.{ours}", t, n_head))
    weights: dict[str, torch.Tensor] = {}
    permuted = arch_permuted(f)
    cached = weight_cache.read(cache_dir, path)
    if cached is not None and set(cached) != {ours for ours, _, _ in jobs}:
        cached = None  # written by another loader version: rebuild it
    for done, (ours, t, n_head) in enumerate(jobs, 1):
        if cached is not None:
            tensor = cached.pop(ours)
        else:
            tensor = _dequantize(t, path)
            if n_head is not None and permuted:
                tensor = _unpermute_rope(tensor, n_head)
        weights[ours] = tensor if keep is None else keep(config, ours, tensor)
        if progress and (done % 16 == 0 or done == len(jobs)):
            progress(done, len(jobs))
    _check_complete(weights, config, path, sharded=keep is not None)
    if cached is None and keep is None:
        weight_cache.write(cache_dir, path, weights)
    return Checkpoint(config, weights, tokenizer, path)


def arch_permuted(f: GGUFFile) -> bool:
    # llama.cpp permutes Q/K for llama-family converts; qwen2 files keep HF's order
    return f.get("general.architecture") in ("llama", "mistral")


# ---- Hugging Face directory ---------------------------------------------------------------------------
def load_hf_dir(directory: Path, progress: Progress | None = None, keep: Keep | None = None
                ) -> Checkpoint:
    from safetensors import safe_open

    config, eos_ids = hf_model_config(directory)
    tokenizer = Tokenizer.from_hf_dir(directory, eos_ids)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors files")
    weights: dict[str, torch.Tensor] = {}
    for n, file in enumerate(files, 1):
        try:
            with safe_open(str(file), framework="pt") as st:
                for key in st.keys():
                    ours = _hf_name(key)
                    if ours is not None:
                        tensor = st.get_tensor(key).float()
                        weights[ours] = tensor if keep is None else keep(config, ours, tensor)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{file}: cannot read safetensors ({e})") from e
        if progress:
            progress(n, len(files))
    if "lm_head" not in weights and not config.tie_word_embeddings:
        raise ValueError(f"{directory}: lm_head.weight missing and embeddings are not tied")
    _check_complete(weights, config, directory, sharded=keep is not None)
    return Checkpoint(config, weights, tokenizer, directory)


def _hf_name(key: str) -> str | None:
    if key == "model.embed_tokens.weight":
        return "embed"
    if key == "model.norm.weight":
        return "norm"
    if key == "lm_head.weight":
        return "lm_head"
    if key.startswith("model.layers."):
        _, _, idx, rest = key.split(".", 3)
        ours = _HF_LAYER_NAMES.get(rest)
        return None if ours is None else f"layers.{idx}.{ours}"
    return None


def _check_complete(weights: dict[str, torch.Tensor], config: ModelConfig, source: Path,
                    sharded: bool = False) -> None:
    required = ["embed", "norm"]
    for i in range(config.num_layers):
        required += [f"layers.{i}.{n}" for n in
                     ("input_norm", "q", "k", "v", "o", "post_norm", "gate", "up", "down")]
    missing = [n for n in required if n not in weights]
    if missing:
        raise ValueError(f"{source}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    if not sharded and tuple(weights["embed"].shape) != (config.vocab_size, config.hidden_size):
        raise ValueError(f"{source}: embedding shape {tuple(weights['embed'].shape)} does not match "
                         f"vocab {config.vocab_size} x hidden {config.hidden_size}")
