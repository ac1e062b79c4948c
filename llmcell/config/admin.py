"""Admin (control plane) configuration: where it listens, where its state lives, liveness timing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmcell.config.security import CellSecurity


def default_state_path() -> Path:
    """SQLite file under the user's state directory (XDG_STATE_HOME or ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llmcell" / "admin.sqlite3"


@dataclass(frozen=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 10000
    state_path: Path = Path("admin.sqlite3")
    """The SQLite state file (one admin's); beside it, by default, the audit log and files."""
    state_url: str | None = None
    """A PostgreSQL URL: the state lives there instead, shared by the admins that name it; one
    of them leads (elected), the others stand by."""
    advertise: str | None = None
    """The URL the other admins and the members reach this admin at (default scheme://host:port);
    a standby points callers at the leader's."""
    leader_lease: float = 5.0
    """Seconds the leader's lease lasts unrenewed: a standby takes over at most this long after
    the leader stops."""
    heartbeat_interval: float = 1.0
    """Seconds between a server's heartbeats (the admin tells servers this value)."""
    missed_heartbeats: int = 3
    """A server silent for this many intervals is dead; its replicas are placed elsewhere."""
    kv_reserve_bytes: int = 512 << 20
    """Memory reserved per replica for its KV cache, on top of the weights."""
    bytes_per_param: float = 4.0
    """Resident bytes per weight when placing (4: fp32, what the CPU engine runs on AVX2)."""
    max_body_bytes: int = 1 << 20
    security: CellSecurity = field(default_factory=CellSecurity)
    bootstrap_admin_key: str | None = None
    """An API key (from a Secret) stored with the admin role at start, so a new cell can be
    managed before any key was made."""
    model_roots: tuple[str, ...] = ()
    """Folders a published model source may be under (besides the built-in aliases); a source
    outside them is refused without saying whether it exists."""
    master_key_file: str | None = None
    """The admin's master key: it sizes encrypted model files at publish, and the secrets in
    the admin's store are kept sealed under it."""
    audit_path: Path | None = None
    """JSON lines of admin actions (default: beside the state file, `*.audit.jsonl`)."""
    quota_window: float = 60.0
    """Seconds of a quota window: `rpm` and `tpm` are requests and tokens per window."""
    lease_ttl: float = 3.0
    """Seconds a gateway's quota leases outlive its last report (then its share returns)."""
    batch_gateway: str | None = None
    """A gateway's URL: the batch runner sends batches' requests through it (None: no batches)."""
    blob_url: str | None = None
    """Where files' bytes live: a folder, `memory://...`, or object storage through fsspec
    (`gs://bucket/prefix`, `s3://...`); default: `files/` beside the state file."""
    max_file_bytes: int = 200 << 20
    max_file_lines: int = 50_000
    """The largest upload, and the most lines (requests) a batch's input may have."""
    batch_concurrency: int = 0
    """Batch requests in flight at once (0: as many as the cell's replicas have slots)."""
    scale_groups: str | None = None
    """The model-server LeaderWorkerSet this admin sizes on Kubernetes (one group per replica
    of every published model; admin/group_scaler.py); None: the admin does not scale groups."""
    min_groups: int = 1
    max_groups: int = 16
    kube_namespace: str = "default"
    kube_api: str = "https://kubernetes.default.svc"
    kube_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    kube_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    """The API server and the pod's service account, for `scale_groups`."""
    response_retention: float = 30 * 86400
    """Seconds a stored Responses API answer (and its conversation) is kept (OpenAI: 30 days)."""

    def __post_init__(self) -> None:
        self.security.check_exposure(self.host)
        if self.bootstrap_admin_key is not None and not self.security.auth:
            raise ValueError("bootstrap_admin_key needs the cell credential (auth on)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is not a TCP port")
        if self.heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval={self.heartbeat_interval} must be > 0")
        if self.missed_heartbeats < 1:
            raise ValueError(f"missed_heartbeats={self.missed_heartbeats} must be >= 1")
        if self.kv_reserve_bytes < 0:
            raise ValueError(f"kv_reserve_bytes={self.kv_reserve_bytes} must be >= 0")
        if self.bytes_per_param <= 0:
            raise ValueError(f"bytes_per_param={self.bytes_per_param} must be > 0")
        if not 0 < self.quota_window <= 86400:
            raise ValueError(f"quota_window={self.quota_window} must be in (0, 86400] seconds")
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes={self.max_file_bytes} must be >= 1")
        if self.max_file_lines < 1:
            raise ValueError(f"max_file_lines={self.max_file_lines} must be >= 1")
        if not 0 <= self.min_groups <= self.max_groups:
            raise ValueError(f"min_groups={self.min_groups} and max_groups={self.max_groups} "
                             "must satisfy 0 <= min_groups <= max_groups")
        if self.scale_groups is not None and not self.scale_groups:
            raise ValueError("scale_groups must name a LeaderWorkerSet")
        if not 60 <= self.response_retention <= 365 * 86400:
            raise ValueError(f"response_retention={self.response_retention} must be in "
                             f"[60, {365 * 86400}] seconds")
        if self.batch_concurrency < 0:
            raise ValueError(f"batch_concurrency={self.batch_concurrency} must be >= 0")
        if self.batch_gateway is not None and not self.batch_gateway.startswith(
                ("http://", "https://")):
            raise ValueError(f"batch_gateway={self.batch_gateway!r} must be an http(s) URL")
        if self.state_url is not None and not self.state_url.startswith(
                ("postgresql://", "postgres://")):
            raise ValueError(f"state_url={self.state_url!r} must be a postgresql:// URL")
        if not 0.5 <= self.leader_lease <= 120:
            raise ValueError(f"leader_lease={self.leader_lease} must be in [0.5, 120] seconds")
        if self.advertise is not None and not self.advertise.startswith(("http://", "https://")):
            raise ValueError(f"advertise={self.advertise!r} must be an http(s) URL")
        if not 0 < self.lease_ttl <= 600:
            raise ValueError(f"lease_ttl={self.lease_ttl} must be in (0, 600] seconds")

    @property
    def advertised(self) -> str:
        return (self.advertise or f"{self.security.scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def state(self) -> str | Path:
        """What the state database opens: the PostgreSQL URL, or the SQLite file."""
        return self.state_url or self.state_path

    @property
    def blobs(self) -> str:
        return self.blob_url or str(Path(self.state_path).parent / "files")

    @property
    def dead_after(self) -> float:
        return self.heartbeat_interval * self.missed_heartbeats
