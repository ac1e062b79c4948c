"""Model-server configuration: where it listens, which engine it fronts, its admission limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcell.config.engine import EngineConfig

ENGINES = ("builtin", "openai")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "builtin"
    """"builtin" (in-process engine) or "openai" (an external OpenAI-compatible server)."""
    upstream: str | None = None
    """Base URL of the external engine (with engine="openai"), e.g. http://127.0.0.1:8001."""
    served_model_name: str | None = None
    """Name clients use; defaults to the engine config's model name or the upstream's model."""
    max_body_bytes: int = 4 << 20
    max_queue: int = 256
    """Requests that may wait for a batch slot; more get 429 with Retry-After."""
    drain_timeout: float = 30.0
    metrics: bool = True
    """Record request metrics and export them on /metrics (off only to measure their cost)."""
    """Seconds to finish running requests after SIGTERM before exiting."""
    upstream_poll_interval: float = 1.0
    admin: str | None = None
    """Admin URL: join that cell and load the models it assigns (no model at start-up)."""
    server_id: str | None = None
    """Id in the cell (default: the advertised address)."""
    advertise: str | None = None
    """URL others reach this server at (default http://host:port)."""
    memory_bytes: int = 8 << 30
    """Memory this server offers the cell for replicas (weights + KV)."""
    engine_config: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r} is not one of {ENGINES}")
        if self.engine == "openai" and not self.upstream:
            raise ValueError("engine='openai' needs upstream=URL of the external engine")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is not a TCP port")
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} must be positive")
        if self.max_queue < 0:
            raise ValueError(f"max_queue={self.max_queue} must be >= 0")
        if self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes={self.memory_bytes} must be positive")
        if self.admin is not None and not self.admin.startswith(("http://", "https://")):
            raise ValueError(f"admin={self.admin!r} must be an http(s) URL")
        if self.drain_timeout < 0:
            raise ValueError(f"drain_timeout={self.drain_timeout} must be >= 0")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.engine_config.model
