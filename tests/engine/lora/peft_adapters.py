"""Make LoRA adapters with PEFT on the default model, as a user would train and save them
(tests only): random non-zero `lora_B`, so the adapter's outputs differ from the base's."""

from __future__ import annotations

from pathlib import Path

import torch


def make_adapter(hf_model, out: Path, targets: list[str], rank: int, seed: int,
                 alpha: float | None = None, rslora: bool = False, scale: float = 0.05) -> Path:
    """Save a PEFT LoRA adapter of `hf_model` (left unchanged) to `out`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank,
                        target_modules=targets, lora_dropout=0.0, use_rslora=rslora,
                        init_lora_weights=True)
    model = get_peft_model(hf_model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * scale)
    model.save_pretrained(str(out))
    model.unload()  # takes the LoRA layers out again: hf_model is the base once more
    return out
