"""Build a Hugging Face transformers Llama from llmcell's dequantized weights (tests only)."""

from __future__ import annotations

import torch

_HF_NAMES = {
    "input_norm": "input_layernorm.weight", "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
    "o": "self_attn.o_proj.weight", "post_norm": "post_attention_layernorm.weight",
    "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight", "down": "mlp.down_proj.weight",
}


def hf_config(c):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings, attention_bias=False)


def hf_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {"model.embed_tokens.weight": weights["embed"], "model.norm.weight": weights["norm"],
          "lm_head.weight": weights.get("lm_head", weights["embed"])}
    for key, value in weights.items():
        if key.startswith("layers."):
            _, i, name = key.split(".")
            sd[f"model.layers.{i}.{_HF_NAMES[name]}"] = value
    return sd


def build_hf_model(checkpoint, dtype=torch.float32):
    from transformers import LlamaForCausalLM

    cfg = hf_config(checkpoint.config)
    model = LlamaForCausalLM(cfg).to(dtype)
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in hf_state_dict(checkpoint.weights).items()}, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"HF weights mismatch: missing={missing} unexpected={unexpected}")
    return model.eval()
