"""Write a loaded checkpoint as a Hugging Face model directory (config, safetensors, tokenizer).

Used to hand the built-in model to peers that cannot read GGUF (vLLM on CPU, transformers) and to
test the Hugging Face loader on real weights. Weights are already in Hugging Face's layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llmcell.engine.loader.weights import _HF_LAYER_NAMES, Checkpoint

_HF_LAYER = {ours: hf for hf, ours in _HF_LAYER_NAMES.items()}


def hf_state_dict(weights: dict[str, torch.Tensor], tie: bool) -> dict[str, torch.Tensor]:
    sd = {"model.embed_tokens.weight": weights["embed"], "model.norm.weight": weights["norm"]}
    if not tie:
        sd["lm_head.weight"] = weights.get("lm_head", weights["embed"])
    for key, value in weights.items():
        if key.startswith("layers."):
            _, i, name = key.split(".")
            sd[f"model.layers.{i}.{_HF_LAYER[name]}"] = value
    return sd


def export_hf_dir(ck: Checkpoint, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = ck.config
    tk = ck.tokenizer
    eos = sorted(tk.eos_token_ids)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings, "attention_bias": c.attention_bias,
        "hidden_act": "silu", "torch_dtype": str(dtype).removeprefix("torch."),
        "bos_token_id": tk.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
    }
    if c.rope_scaling:
        config["rope_scaling"] = dict(c.rope_scaling)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tk.bos_token_id, "eos_token_id": config["eos_token_id"]}, indent=2))
    sd = {k: v.to(dtype).contiguous() for k, v in
          hf_state_dict(ck.weights, c.tie_word_embeddings).items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    export_tokenizer_dir(tk, c.max_position_embeddings, out)
    return out


def export_tokenizer_dir(tk, max_len: int, out: str | Path) -> Path:
    """The tokenizer as a Hugging Face directory (`tokenizer.json`, `tokenizer_config.json`
    with the chat template, `special_tokens_map.json`): what `AutoTokenizer.from_pretrained`
    and the load tools built on it (guidellm, aiperf) read."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tk.save(out / "tokenizer.json")
    special = {"bos_token": tk.bos_token or None, "eos_token": tk.eos_token or None,
               "pad_token": tk.eos_token or None}
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
        **special, "add_bos_token": tk.add_bos,
        "chat_template": tk.chat_template, "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in special.items() if v}, indent=2))
    return out


def load_tokenizer(model: str):
    """(the model's tokenizer, its context length) without loading its weights."""
    from llmcell.engine.loader.gguf_file import GGUFFile
    from llmcell.engine.loader.registry import resolve_model_path
    from llmcell.engine.loader.weights import gguf_model_config, hf_model_config
    from llmcell.tokenizer.tokenizer import Tokenizer

    path = resolve_model_path(model)
    if path.is_dir():
        config, eos = hf_model_config(path)
        return Tokenizer.from_hf_dir(path, eos), config.max_position_embeddings
    f = GGUFFile(path)
    return Tokenizer.from_gguf(f, path), gguf_model_config(f).max_position_embeddings
