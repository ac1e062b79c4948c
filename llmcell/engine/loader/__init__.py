"""Model loading: resolve a model name to files on disk, read weights, tokenizer and template."""

from llmcell.engine.loader.registry import load_checkpoint, resolve_model_path, MODEL_ALIASES

__all__ = ["load_checkpoint", "resolve_model_path", "MODEL_ALIASES"]
