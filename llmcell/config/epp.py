"""Endpoint picker configuration: the ext_proc gRPC port a Gateway API inference gateway calls,
the admin it follows, and the routing it applies (the gateway's policies)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcell.config.admins import admin_urls
from llmcell.config.gateway import POLICIES
from llmcell.config.security import CellSecurity


@dataclass(frozen=True)
class EppConfig:
    admin: str = "http://127.0.0.1:10000"
    host: str = "127.0.0.1"
    port: int = 9002
    """The ext_proc gRPC port (the InferencePool's endpointPickerRef port); the gRPC health
    service answers on it too."""
    metrics_port: int = 9090
    """Prometheus metrics over HTTP (0: none)."""
    health_port: int = 9003
    """The gRPC health service again, always in plaintext, for probes that cannot speak TLS
    (Kubernetes' gRPC probes); 0: only on `port`."""
    policy: str = "least_load"
    bounded_load: float = 1.25
    prefix_chars: int = 2048
    view_interval: float = 0.5
    fallbacks: int = 0
    """Further endpoints named after the picked one, in the policy's order, for the data plane's
    retries (the protocol's `ip:port,ip:port` list). 0: one endpoint, which every data plane
    reads (Envoy's ORIGINAL_DST cluster takes a single address from the header)."""
    max_body_bytes: int = 4 << 20
    cold_start_held: int = 256
    cold_start_timeout: float = 60.0
    """Requests held per model while it gets its first replica (scaled to zero), and how long
    each waits before a 503, as at the gateway."""
    self_signed: bool = False
    """Serve the gRPC port over TLS with a certificate made at start (what Gateway API inference
    gateways expect of an endpoint picker by default: they encrypt, and do not verify), unless
    the security settings name a certificate."""
    security: CellSecurity = field(default_factory=CellSecurity)

    def __post_init__(self) -> None:
        self.security.check_exposure(self.host)
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not one of {POLICIES}")
        for name in ("port", "metrics_port", "health_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name}={getattr(self, name)} is not a TCP port")
        admin_urls(self.admin)
        if self.bounded_load < 1.0:
            raise ValueError(f"bounded_load={self.bounded_load} must be >= 1.0")
        if self.prefix_chars < 1:
            raise ValueError(f"prefix_chars={self.prefix_chars} must be >= 1")
        if self.view_interval <= 0:
            raise ValueError(f"view_interval={self.view_interval} must be > 0")
        if not 0 <= self.fallbacks <= 10:
            raise ValueError(f"fallbacks={self.fallbacks} must be in [0, 10]")
        if self.cold_start_held < 0 or not 0 < self.cold_start_timeout <= 600:
            raise ValueError(f"cold_start_held={self.cold_start_held} must be >= 0 and "
                             f"cold_start_timeout={self.cold_start_timeout} in (0, 600] s")
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} must be positive")
