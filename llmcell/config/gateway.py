"""Gateway configuration: the front door on 8888, the admin it follows, routing and retries."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcell.config.admins import admin_urls
from llmcell.config.security import CellSecurity

POLICIES = ("round_robin", "least_load", "prefix_affinity", "kv_affinity")
QUEUEING = ("fair", "off")
DIALECTS = ("v1", "v2")


@dataclass(frozen=True)
class GatewayConfig:
    admin: str = "http://127.0.0.1:10000"
    host: str = "127.0.0.1"
    port: int = 8888
    policy: str = "least_load"
    sax_compat: str = "v2"
    """Saxml REST dialect when a request carries no `X-Sax-Compat` header."""
    view_interval: float = 0.5
    """Seconds between reads of the admin's routing view (the view follows within ~1 s)."""
    retries: int = 2
    """Further replicas tried when one refuses, answers 5xx or fails before the first byte."""
    cooldown: float = 5.0
    """Seconds a replica that failed is tried only when no other is left."""
    prefix_chars: int = 2048
    """Leading prompt characters (~512 tokens) hashed for prefix_affinity."""
    bounded_load: float = 1.25
    """prefix_affinity: no replica takes more than this factor times the mean load."""
    max_body_bytes: int = 4 << 20
    cache_bytes: int = 0
    """The response cache's size (0: off, the default, as a benchmark or an evaluation expects):
    answers to requests with temperature 0 or a seed."""
    cache_ttl: float = 600.0
    """Seconds a cached answer is served."""
    cold_start_held: int = 256
    cold_start_timeout: float = 60.0
    """Requests held per model while it gets its first replica (scaled to zero), and how long
    each waits before a 503."""
    max_file_bytes: int = 200 << 20
    """The largest upload to `/v1/files` (the admin keeps the files; give both the same)."""
    request_timeout: float = 600.0
    advertise: str | None = None
    """URL the admin lists this gateway at for Prometheus discovery (default http://host:port)."""
    security: CellSecurity = field(default_factory=CellSecurity)
    drain_timeout: float = 10.0
    """Seconds running requests may finish after SIGTERM; connections still open then (an idle
    TLS keep-alive, a stream) are closed."""
    lease_interval: float = 1.0
    """Seconds between the gateway's quota reports to the admin (each returns its leases)."""
    queueing: str = "fair"
    """`fair`: when a model's slots are full, requests wait here and go by tenant fairly
    (tenancy/fair_queue.py); `off`: every request goes straight to a replica."""
    max_queued: int = 256
    """Requests one tenant may have waiting for one model; beyond: 429."""
    queue_timeout: float = 30.0
    """Seconds a request may wait for a slot; then 503 with Retry-After."""
    replica_connections: int = 0
    """Requests this gateway has in flight to replicas at most (0: no ceiling); beyond it, a
    request gets 429 + Retry-After at once."""
    replica_slots: int = 0
    """Batch slots per replica when its server reports none (an external engine); 0: such
    replicas are never counted full."""
    default_reserve_tokens: int = 512
    """Tokens reserved against a token quota for the answer of a request without max_tokens
    (settled to what it used)."""

    @property
    def advertised(self) -> str:
        return self.advertise or f"{self.security.scheme}://{self.host}:{self.port}"

    def __post_init__(self) -> None:
        self.security.check_exposure(self.host)
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not one of {POLICIES}")
        if self.sax_compat not in DIALECTS:
            raise ValueError(f"sax_compat={self.sax_compat!r} is not one of {DIALECTS}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is not a TCP port")
        admin_urls(self.admin)
        if self.view_interval <= 0:
            raise ValueError(f"view_interval={self.view_interval} must be > 0")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries={self.retries} must be in [0, 10]")
        if self.prefix_chars < 1:
            raise ValueError(f"prefix_chars={self.prefix_chars} must be >= 1")
        if self.bounded_load < 1.0:
            raise ValueError(f"bounded_load={self.bounded_load} must be >= 1.0")
        if not 0 <= self.drain_timeout <= 3600:
            raise ValueError(f"drain_timeout={self.drain_timeout} must be in [0, 3600] seconds")
        if self.queueing not in QUEUEING:
            raise ValueError(f"queueing={self.queueing!r} is not one of {QUEUEING}")
        if not 0.05 <= self.lease_interval <= 60:
            raise ValueError(f"lease_interval={self.lease_interval} must be in [0.05, 60] s")
        if self.max_queued < 1:
            raise ValueError(f"max_queued={self.max_queued} must be >= 1")
        if self.queue_timeout <= 0:
            raise ValueError(f"queue_timeout={self.queue_timeout} must be > 0 seconds")
        if self.replica_connections < 0:
            raise ValueError(f"replica_connections={self.replica_connections} must be >= 0 "
                             "(0: no ceiling)")
        if self.replica_slots < 0:
            raise ValueError(f"replica_slots={self.replica_slots} must be >= 0")
        if self.default_reserve_tokens < 1:
            raise ValueError(f"default_reserve_tokens={self.default_reserve_tokens} must be >= 1")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes={self.cache_bytes} must be >= 0 (0: no cache)")
        if self.cold_start_held < 0:
            raise ValueError(f"cold_start_held={self.cold_start_held} must be >= 0")
        if not 0 < self.cold_start_timeout <= 600:
            raise ValueError(f"cold_start_timeout={self.cold_start_timeout} must be in (0, 600] "
                             "seconds")
        if self.cache_ttl <= 0:
            raise ValueError(f"cache_ttl={self.cache_ttl} must be > 0 seconds")
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes={self.max_file_bytes} must be positive")
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} must be positive")
