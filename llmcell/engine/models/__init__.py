"""Model implementations: forward passes over a flattened token batch with a paged KV cache.

`LlamaModel` loads on first use (PEP 562), so that reading a model's shape (`config`) does not
import torch (the admin checks LoRA adapters against it).
"""

from importlib import import_module

__all__ = ["ModelConfig", "LlamaModel"]
_EXPORTS = {"ModelConfig": "llmcell.engine.models.config",
            "LlamaModel": "llmcell.engine.models.llama"}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmcell.engine.models' has no attribute {name!r}")
    return getattr(import_module(module), name)
