"""The endpoint picker's decision for one request, independent of the wire: headers and body in,
either the endpoints to send it to (and the body and headers they need) or the error to answer.

It decides as the gateway does (gateway/openai_routes.py): the same request validation
(`llmcell.protocol.openai`), the same model names (`CellView.resolve`: a Sax path or its last
component), the same authentication and model allowances when auth is on, the same routing inputs
(gateway/route_inputs.py) and policy over the same admin view. The body sent on names the
published model and carries the band's engine priority, as the gateway's does; with auth on, the
caller's key is swapped for the cell credential, which the model servers require.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from llmcell.edge.auth import AuthError, Authenticator
from llmcell.protocol.auth import role_at_least
from llmcell.edge.body import parse_json
from llmcell.edge.errors import openai_error
from llmcell.gateway.kv_follow import KVFollower
from llmcell.gateway.route_inputs import route_inputs
from llmcell.gateway.view import CellView
from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import CONTINUATION, parse_chat, parse_completion
from llmcell.protocol.tenancy import BANDS, PRIORITY_HEADER, band_of
from llmcell.router import Policy, RouteRequest

PATHS = {"/v1/chat/completions": True, "/v1/completions": False}
"""The paths it routes, and whether each is chat."""


@dataclass
class Pick:
    model: str
    replicas: list[str]
    """Server ids, the chosen one first, then the fallbacks."""
    endpoints: list[str]
    """The same, as `ip:port`."""
    body: bytes
    set_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Refusal:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    model: str = ""


def endpoint_of(address: str) -> str:
    """A replica's URL as the protocol's `ip:port`."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refusal(status: int, message: str, code: str, model: str = "") -> Refusal:
    err = APIError(status, message, code=code)
    return Refusal(status, json.dumps(err.body()).encode(), model=model)


class Picker:
    def __init__(self, view: CellView, policy: Policy, kv: KVFollower | None, prefix_chars: int,
                 fallbacks: int, max_body: int, auth: Authenticator | None,
                 cell_token: str | None) -> None:
        self.view = view
        self.policy = policy
        self.kv = kv
        self.prefix_chars = prefix_chars
        self.fallbacks = fallbacks
        self.max_body = max_body
        self.auth = auth
        self.cell_token = cell_token
        self.seq = 0

    def decide(self, headers: dict[str, str], body: bytes) -> Pick | Refusal:
        """`headers`: the request's, lower-case names (with `:path` and `:method`)."""
        model = ""
        try:
            path = headers.get(":path", "").split("?", 1)[0]
            if path not in PATHS or headers.get(":method", "POST") != "POST":
                raise APIError(404, f"the endpoint picker routes POST {' and '.join(PATHS)}; "
                                    f"not {headers.get(':method', '')} {path}")
            if len(body) > self.max_body:
                raise APIError(413, f"the request body has {len(body)} bytes, more than the "
                                    f"limit of {self.max_body}", code="request_too_large")
            chat = PATHS[path]
            data = parse_json(body, openai_error)
            if not isinstance(data, dict):
                raise APIError(400, "the request body must be a JSON object")
            req = (parse_chat if chat else parse_completion)(data)
            model = self.view.resolve(req.model)
            principal = self._authenticate(headers, model)
            try:
                band = band_of(headers.get(PRIORITY_HEADER),
                               principal.record.max_priority if principal and principal.record
                               else None)
            except ValueError as e:
                raise APIError(400, str(e), param=PRIORITY_HEADER, code="invalid_value") from None
            return self._pick(model, data, req, chat, BANDS.index(band))
        except APIError as e:
            return Refusal(e.status, json.dumps(e.body()).encode(), dict(e.headers), model)
        except AuthError as e:
            return _refusal(e.status, e.message, e.code, model)

    def _authenticate(self, headers: dict[str, str], model: str):
        if self.auth is None:
            return None
        principal = self.auth.identify(headers.get("authorization"))
        if not principal.cell and not role_at_least(principal.role, "user"):
            raise AuthError(403, f"key {principal.key_id} has the {principal.role!r} role; "
                                 "generating needs 'user'", "insufficient_role")
        if not principal.may_use(model):
            raise AuthError(403, f"key {principal.key_id} may not use the model {model}",
                            "model_not_allowed")
        return principal

    def _pick(self, model: str, data: dict, req, chat: bool, priority: int) -> Pick:
        key, cached = route_inputs(data, req, chat, model, self.prefix_chars, self.kv)
        self.seq += 1
        route = RouteRequest(self.seq, key, cached)
        chosen = []
        while len(chosen) <= self.fallbacks:
            replicas = self.view.snapshot(model, {r.server_id for r in chosen})
            if not replicas:
                break
            chosen.append(self.policy(replicas, route))
        if not chosen:
            total = len(self.view.view.models.get(model, []))
            raise APIError(503, f"model {model} has no active replica right now ({total} "
                                "serving); retry shortly", code="no_active_replica",
                           headers={"Retry-After": "1"})
        forward = dict(data, model=model, priority=priority)
        forward.pop(CONTINUATION, None)  # between the cell's members only
        body = json.dumps(forward, ensure_ascii=False, separators=(",", ":")).encode()
        set_headers = {"content-length": str(len(body))}
        if self.cell_token is not None:
            set_headers["authorization"] = f"Bearer {self.cell_token}"
        return Pick(model, [r.server_id for r in chosen],
                    [endpoint_of(r.address) for r in chosen], body, set_headers)

    def begin(self, pick: Pick) -> None:
        """The request went to its first endpoint: count it in that replica's load."""
        self.view.begin(pick.replicas[0])

    def end(self, pick: Pick) -> None:
        self.view.end(pick.replicas[0])
