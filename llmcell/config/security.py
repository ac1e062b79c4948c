"""How a component proves it belongs to the cell, and whether it asks callers to prove it.

Every member of a cell (admin, gateways, model servers) shares one secret, the cell credential:
they send it to each other as `Authorization: Bearer <credential>`, and API keys are checked
only where it is set (auth on). Without it a component serves anyone, which is allowed on
loopback only (`make run`) unless `allow_unauthenticated` says so explicitly.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ENV = "LLMCELL_CELL_TOKEN"
"""Where a component finds the cell credential when no file is given (a Kubernetes Secret is
mounted as this variable)."""
MIN_TOKEN_CHARS = 32


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class CellSecurity:
    cell_token: str | None = None
    allow_unauthenticated: bool = False
    """Serve without the credential beyond loopback (`--no-auth`): for a network of its own."""
    tls_cert: str | None = None
    """PEM certificate (chain) this component serves HTTPS with; with `tls_key`."""
    tls_key: str | None = None
    tls_ca: str | None = None
    """PEM CA bundle this component trusts when it calls the others (their HTTPS)."""
    tls_client_certs: bool = False
    """Serve only callers that present a certificate signed by `tls_ca` (mutual TLS); members
    present their own `tls_cert` when they call."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (got only "
                             f"{'tls_cert' if self.tls_cert else 'tls_key'})")
        if self.tls_client_certs and not (self.tls_cert and self.tls_ca):
            raise ValueError("tls_client_certs needs tls_cert, tls_key and tls_ca")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}={path!r} is not a readable file")
        if self.cell_token is not None and (len(self.cell_token) < MIN_TOKEN_CHARS
                                            or any(c.isspace() for c in self.cell_token)):
            raise ValueError(f"cell_token must be at least {MIN_TOKEN_CHARS} characters "
                             "without spaces (it has "
                             f"{len(self.cell_token)}); make one with `llmcell keys new cell-token`")

    @property
    def auth(self) -> bool:
        return self.cell_token is not None

    def check_exposure(self, host: str) -> None:
        """ValueError when `host` listens beyond loopback with auth off, unasked."""
        if not self.auth and not self.allow_unauthenticated and not is_loopback(host):
            raise ValueError(f"host={host!r} listens beyond loopback without the cell credential "
                             f"(--cell-token-file or ${ENV}); give one, or --no-auth to serve "
                             "anyone who reaches it")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def uvicorn_tls(self) -> dict:
        """uvicorn's settings for serving this component's TLS (none without a certificate)."""
        if not self.tls_cert:
            return {}
        mutual = {"ssl_ca_certs": self.tls_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED} \
            if self.tls_client_certs else {}
        return {"ssl_certfile": self.tls_cert, "ssl_keyfile": self.tls_key, **mutual}

    def verify(self):
        """What an httpx client of this member verifies the others with (the cell's CA, else
        the system's), presenting this member's certificate where it has one."""
        if not (self.tls_ca or self.tls_cert):
            return True
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def client(self, **kw) -> dict:
        """httpx client settings for calls to the other members: the credential and the CA."""
        return {"headers": self.headers(), "verify": self.verify(), **kw}

    def headers(self) -> dict[str, str]:
        """What this member sends with its calls to the others."""
        return {"Authorization": f"Bearer {self.cell_token}"} if self.cell_token else {}

    @classmethod
    def from_sources(cls, env: Mapping[str, str], token_file: str | None,
                     no_auth: bool = False, **tls: str | None) -> "CellSecurity":
        """From `--cell-token-file` (its first line), else `$LLMCELL_CELL_TOKEN`; `tls`: the
        certificate, key and CA paths."""
        token = None
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as e:
                raise ValueError(f"cell_token_file={token_file!r}: {e.strerror}") from None
        elif env.get(ENV):
            token = env[ENV].strip()
        return cls(token or None, no_auth, **tls)
