"""Configuration: one frozen dataclass per component, loaded once at the edge and passed down."""

from llmcell.config.engine import EngineConfig
from llmcell.config.server import ServerConfig

__all__ = ["EngineConfig", "ServerConfig"]
