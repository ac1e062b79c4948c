"""Build a Hugging Face transformers Llama from llmcell's dequantized weights (tests only)."""

from __future__ import annotations

import torch

from llmcell.engine.loader.export import hf_state_dict



def hf_config(c):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings, attention_bias=False)


def build_hf_model(checkpoint, dtype=torch.float32):
    from transformers import LlamaForCausalLM

    cfg = hf_config(checkpoint.config)
    model = LlamaForCausalLM(cfg).to(dtype)
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in hf_state_dict(checkpoint.weights, False).items()}, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"HF weights mismatch: missing={missing} unexpected={unexpected}")
    return model.eval()
