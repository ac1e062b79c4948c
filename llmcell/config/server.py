"""Model-server configuration: where it listens, which engine it fronts, its admission limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from llmcell.config.admins import admin_urls
from llmcell.config.engine import EngineConfig
from llmcell.config.security import CellSecurity

ENGINES = ("builtin", "openai")


def lora_module(text: str) -> tuple[str, str]:
    """`NAME=PATH` (a `--lora-modules` or `--lora` value) -> (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=PATH, got {text!r}")
    return name, path


@dataclass(frozen=True)
class GroupConfig:
    """This process's place in a model-server group (LeaderWorkerSet's contract)."""

    size: int = 1
    rank: int = 0
    """0 = the leader (schedules, serves HTTP); 1.. = workers (hold shards, run steps)."""
    leader: str = "127.0.0.1"
    """Address of the leader, where the rendezvous listens."""
    port: int = 29500
    timeout: float = 5.0
    """Seconds a member may stay silent before the leader declares the group broken."""

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 1024:
            raise ValueError(f"group size={self.size} must be between 1 and 1024")
        if not 0 <= self.rank < self.size:
            raise ValueError(f"group rank={self.rank} must be in [0, {self.size})")
        if not 1 <= self.port <= 65534:
            raise ValueError(f"group port={self.port} is not a TCP port (port + 1 is used too)")
        if self.timeout <= 0:
            raise ValueError(f"group timeout={self.timeout} must be > 0 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str], size: int | None = None, rank: int | None = None,
                 leader: str | None = None, port: int | None = None) -> "GroupConfig":
        """LWS_GROUP_SIZE, LWS_WORKER_INDEX, LWS_LEADER_ADDRESS and LLMCELL_GROUP_PORT, each
        overridden by the explicit value when one is given."""
        def number(name: str, value: int | None, default: int) -> int:
            if value is not None:
                return value
            try:
                return int(env.get(name, default))
            except ValueError:
                raise ValueError(f"{name}={env[name]!r} is not an integer") from None

        return cls(size=number("LWS_GROUP_SIZE", size, 1),
                   rank=number("LWS_WORKER_INDEX", rank, 0),
                   leader=leader or env.get("LWS_LEADER_ADDRESS", "127.0.0.1"),
                   port=number("LLMCELL_GROUP_PORT", port, 29500))


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
    lora_modules: tuple[tuple[str, str], ...] = ()
    """(name, PEFT directory) of LoRA adapters served beside the model when standalone
    (vLLM's `--lora-modules`); in a cell the admin assigns them."""
    adapter_base_timeout: float = 600.0
    """How long a LoRA adapter assigned here waits for its base model to be ready."""
    """Seconds to finish running requests after SIGTERM before exiting."""
    engine_process: bool = True
    """Run the builtin engine's core in a process of its own (the HTTP event loop and the engine's
    steps then never wait for each other's GIL); False keeps it on a thread of this process. A
    group of several hosts (group size > 1) always keeps it in process."""
    engine_nice: int = 2
    """How much lower the engine process's CPU priority is than the server's (0-19). Small: where
    they share cores, requests are read and tokens written before the engine's threads take the
    core back, while beside other processes on a node the engine still gets nearly a fair share
    (a larger nice, or SCHED_IDLE, hands a co-tenant most of every contested core)."""
    engine_idle: bool = False
    """Run the engine process under SCHED_IDLE (Linux), by explicit choice only: its threads take
    only CPU time nothing else wants, so a waking event loop gets a core at once (about 50 us per
    wake-up against 150-220 us with nice 5), but any co-tenant starves it."""
    metrics: bool = True
    """Record request metrics and export them on /metrics (off only to measure their cost)."""
    upstream_poll_interval: float = 1.0
    upstream_connections: int = 0
    """Requests in flight to the external engine at most (0: no ceiling); beyond it, 429 +
    Retry-After at once."""
    admin: str | None = None
    """Admin URL: join that cell and load the models it assigns (no model at start-up)."""
    server_id: str | None = None
    """Id in the cell (default: the advertised address)."""
    advertise: str | None = None
    """URL others reach this server at (default http://host:port)."""
    memory_bytes: int = 8 << 30
    """Memory this server offers the cell for replicas (weights + KV)."""
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    group: GroupConfig = field(default_factory=lambda: GroupConfig())
    security: CellSecurity = field(default_factory=CellSecurity)

    def __post_init__(self) -> None:
        self.security.check_exposure(self.host)
        if self.group.size > 1 and self.engine != "builtin":
            raise ValueError("a group (group size > 1) runs the builtin engine only")
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
        if self.admin is not None:
            admin_urls(self.admin)
        if not 0 <= self.engine_nice <= 19:
            raise ValueError(f"engine_nice={self.engine_nice} must be in [0, 19]")
        if self.drain_timeout < 0:
            raise ValueError(f"drain_timeout={self.drain_timeout} must be >= 0")
        if self.upstream_connections < 0:
            raise ValueError(f"upstream_connections={self.upstream_connections} must be >= 0 "
                             "(0: no ceiling)")
        if self.lora_modules and self.engine != "builtin":
            raise ValueError("lora_modules need engine='builtin' (give an external engine its "
                             "adapters itself)")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.engine_config.model
