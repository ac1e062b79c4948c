"""Model loading: resolve a model name to files on disk, read weights, tokenizer and template.

`load_checkpoint` (torch) loads on first use, so that resolving a name or reading a tokenizer does
not import torch."""

from importlib import import_module

__all__ = ["load_checkpoint", "resolve_model_path", "MODEL_ALIASES"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'llmcell.engine.loader' has no attribute {name!r}")
    value = getattr(import_module("llmcell.engine.loader.registry"), name)
    globals()[name] = value
    return value
