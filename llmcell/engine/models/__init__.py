"""Model implementations: forward passes over a flattened token batch with a paged KV cache."""

from llmcell.engine.models.config import ModelConfig
from llmcell.engine.models.llama import LlamaModel

__all__ = ["ModelConfig", "LlamaModel"]
