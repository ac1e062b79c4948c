"""Configuration: one frozen dataclass per component, loaded once at the edge and passed down."""

from llmcell.config.engine import EngineConfig

__all__ = ["EngineConfig"]
