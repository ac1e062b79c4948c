"""The cell's verbs: `llmcell admin`, `llmcell gateway`, `llmcell up` and `llmcell keys`, and the
flags every member of a cell shares (its credential); `llmcell/cli.py` adds them to the parser."""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

from llmcell.config.security import ENV as CELL_TOKEN_ENV
from llmcell import encryption
from llmcell.config.gateway import POLICIES as ROUTING_POLICIES
from llmcell.config.security import CellSecurity
from llmcell.config.server import lora_module
from llmcell.protocol.auth import KEY, new_key

ADMIN_KEY_ENV = "LLMCELL_ADMIN_KEY"
"""An API key the admin stores with the admin role at start (a Kubernetes Secret's)."""
API_KEY_ENV = "LLMCELL_API_KEY"
"""The key `llmcell keys` (and the OpenAI client) send."""


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2GiB, 512M)") from None


def add_security_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cell-token-file", default=None,
                   help=f"the cell credential (default: ${CELL_TOKEN_ENV}); with it, auth is on: "
                        "API keys on the gateway, the credential between members")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without the credential even beyond loopback")
    p.add_argument("--tls-cert", default=None, help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", default=None,
                   help="PEM CA bundle trusted when calling the other members over HTTPS")
    p.add_argument("--tls-client-certs", action="store_true",
                   help="mutual TLS: serve only callers with a certificate signed by --tls-ca")


def security(args: argparse.Namespace) -> CellSecurity:
    return CellSecurity.from_sources(os.environ, args.cell_token_file, args.no_auth,
                                     tls_cert=args.tls_cert, tls_key=args.tls_key,
                                     tls_ca=args.tls_ca, tls_client_certs=args.tls_client_certs)


def cmd_admin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmcell.admin.database import is_url
    from llmcell.admin.main import run
    from llmcell.config.admin import AdminConfig, default_state_path

    bootstrap = None
    if args.admin_key_file:
        bootstrap = Path(args.admin_key_file).read_text().strip()
    elif os.environ.get(ADMIN_KEY_ENV):
        bootstrap = os.environ[ADMIN_KEY_ENV].strip()
    if bootstrap is not None and not KEY.match(bootstrap):
        raise ValueError("the bootstrap admin key is not an sk-llmcell- key (make one with "
                         "`llmcell keys new key`)")
    return run(AdminConfig(host=args.host, port=args.port,
                           state_path=Path(args.state) if args.state and not is_url(args.state)
                           else default_state_path(),
                           state_url=args.state if args.state and is_url(args.state) else None,
                           advertise=args.advertise, leader_lease=args.leader_lease,
                           heartbeat_interval=args.heartbeat_interval,
                           missed_heartbeats=args.missed_heartbeats,
                           kv_reserve_bytes=args.kv_reserve,
                           bytes_per_param=args.bytes_per_param, security=security(args),
                           bootstrap_admin_key=bootstrap, model_roots=tuple(args.model_root),
                           master_key_file=args.master_key_file,
                           audit_path=Path(args.audit_log) if args.audit_log else None,
                           quota_window=args.quota_window, lease_ttl=args.lease_ttl,
                           batch_gateway=args.batch_gateway, blob_url=args.blobs,
                           max_file_bytes=args.max_file_bytes,
                           max_file_lines=args.max_file_lines,
                           batch_concurrency=args.batch_concurrency,
                           response_retention=args.response_retention * 86400,
                           scale_groups=args.scale_groups, min_groups=args.min_groups,
                           max_groups=args.max_groups, kube_namespace=args.kube_namespace))


def cmd_gateway(args: argparse.Namespace) -> int:
    from llmcell.config.gateway import GatewayConfig
    from llmcell.gateway.main import run

    return run(GatewayConfig(admin=args.admin, host=args.host, port=args.port, policy=args.policy,
                             sax_compat=args.sax_compat, retries=args.retries,
                             advertise=args.advertise, security=security(args),
                             drain_timeout=args.drain_timeout,
                             lease_interval=args.lease_interval, queueing=args.queueing,
                             max_queued=args.max_queued, queue_timeout=args.queue_timeout,
                             replica_slots=args.replica_slots,
                             replica_connections=args.replica_connections,
                             max_file_bytes=args.max_file_bytes, cache_bytes=args.cache_bytes,
                             cache_ttl=args.cache_ttl))


def cmd_up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmcell.config.admin import default_state_path
    from llmcell.local_cell import CellPlan, run

    return run(CellPlan(servers=args.servers, host=args.host, gateway_port=args.port,
                        admin_port=args.admin_port, model=args.model, replicas=args.replicas,
                        state_path=Path(args.state) if args.state else
                        default_state_path().with_name("up.sqlite3"),
                        policy=args.policy, threads=args.threads,
                        group_size=args.group_size, drain_timeout=args.drain_timeout,
                        lora=tuple(args.lora), auth=args.auth))


def add_cell_parsers(sub) -> None:
    a = sub.add_parser("admin", help="run the admin (control plane) of a cell",
                       description="Track model servers, place published models on them, keep "
                                   "the cell's state in SQLite.")
    a.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    a.add_argument("--port", type=int, default=10000, help="port (default: %(default)s)")
    a.add_argument("--state", default=None,
                   help="SQLite state file (default: ~/.local/state/llmcell/admin.sqlite3), or a "
                        "postgresql:// URL shared by several admins (one leads)")
    a.add_argument("--advertise", default=None,
                   help="URL other admins and members reach this one at (default: "
                        "scheme://host:port)")
    a.add_argument("--leader-lease", type=float, default=5.0,
                   help="seconds the leader's lease lasts unrenewed (default: 5)")
    a.add_argument("--heartbeat-interval", type=float, default=1.0,
                   help="seconds between server heartbeats (default: %(default)s)")
    a.add_argument("--missed-heartbeats", type=int, default=3,
                   help="heartbeats a server may miss before it is dead (default: %(default)s)")
    a.add_argument("--bytes-per-param", type=float, default=4.0,
                   help="bytes of memory per parameter when sizing a replica: 4 fp32, 2 bf16, "
                        "1 int8 (default: %(default)s)")
    a.add_argument("--kv-reserve", type=parse_size, default=512 << 20,
                   help="KV-cache memory counted per replica when placing (default: 512MiB)")
    a.add_argument("--model-root", action="append", default=[], metavar="DIR",
                   help="a folder published model sources may be under (repeatable; the "
                        "built-in aliases are always allowed)")
    a.add_argument("--admin-key-file", default=None,
                   help=f"an sk-llmcell- key stored with the admin role at start (default: "
                        f"${ADMIN_KEY_ENV}); needs auth on")
    a.add_argument("--master-key-file", default=None,
                   help="the admin's master key: sizes encrypted model files, and seals the "
                        "secrets in its store")
    a.add_argument("--audit-log", default=None,
                   help="JSON lines of admin actions (default: beside --state, *.audit.jsonl)")
    a.add_argument("--quota-window", type=float, default=60.0,
                   help="seconds of a quota window: rpm and tpm count per window (default: 60)")
    a.add_argument("--lease-ttl", type=float, default=3.0,
                   help="seconds a gateway's quota leases outlive its last report (default: 3)")
    a.add_argument("--batch-gateway", default=None, metavar="URL",
                   help="run batches (the OpenAI Batch API) through this gateway "
                        "(default: no batches)")
    a.add_argument("--blobs", default=None, metavar="URL",
                   help="where files' bytes live: a folder, or gs://..., s3://... through "
                        "fsspec (default: files/ beside --state)")
    a.add_argument("--max-file-bytes", type=parse_size, default=200 << 20,
                   help="the largest upload (default: 200MiB)")
    a.add_argument("--max-file-lines", type=int, default=50_000,
                   help="the most requests in a batch's input (default: %(default)s)")
    a.add_argument("--batch-concurrency", type=int, default=0,
                   help="batch requests in flight (default: 0, the cell's replica slots)")
    a.add_argument("--scale-groups", default=None, metavar="LWS",
                   help="on Kubernetes: size this model-server LeaderWorkerSet, one group per "
                        "replica of every published model (the admin owns replica counts)")
    a.add_argument("--min-groups", type=int, default=1, help="with --scale-groups (default 1)")
    a.add_argument("--max-groups", type=int, default=16, help="with --scale-groups (default 16)")
    a.add_argument("--kube-namespace", default="default",
                   help="the LeaderWorkerSet's namespace (default: %(default)s)")
    a.add_argument("--response-retention", type=float, default=30.0, metavar="DAYS",
                   help="days a stored Responses API answer is kept (default: %(default)s)")
    add_security_flags(a)
    a.set_defaults(func=cmd_admin)

    g = sub.add_parser("gateway", help="run the gateway (Saxml REST + OpenAI API)",
                       description="The cell's front door: Saxml REST and the OpenAI API, routed "
                                   "across replicas with failover.")
    g.add_argument("--admin", default="http://127.0.0.1:10000", help="admin URL")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    g.add_argument("--port", type=int, default=8888, help="port (default: %(default)s)")
    g.add_argument("--policy", default="least_load",
                   choices=ROUTING_POLICIES, help="routing policy (default: %(default)s)")
    g.add_argument("--sax-compat", default="v2", choices=["v1", "v2"],
                   help="Saxml REST dialect without an X-Sax-Compat header (default: v2)")
    g.add_argument("--retries", type=int, default=2,
                   help="other replicas tried when one fails (default: %(default)s)")
    g.add_argument("--advertise", default=None,
                   help="URL the admin lists this gateway at for Prometheus discovery "
                        "(default: http://host:port)")
    g.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds running requests may finish after SIGTERM (default: 10)")
    g.add_argument("--lease-interval", type=float, default=1.0,
                   help="seconds between quota reports to the admin (default: 1)")
    g.add_argument("--queueing", default="fair", choices=["fair", "off"],
                   help="when a model's slots are full, queue here by tenant (fair) or send "
                        "every request on (off) (default: fair)")
    g.add_argument("--max-queued", type=int, default=256,
                   help="requests one tenant may have waiting per model (default: 256)")
    g.add_argument("--queue-timeout", type=float, default=30.0,
                   help="seconds a request may wait for a slot (default: 30)")
    g.add_argument("--cache-bytes", type=parse_size, default=0,
                   help="response cache for requests with temperature 0 or a seed, e.g. 64MiB "
                        "(default: 0, off)")
    g.add_argument("--cache-ttl", type=float, default=600.0,
                   help="seconds a cached answer is served (default: %(default)s)")
    g.add_argument("--max-file-bytes", type=parse_size, default=200 << 20,
                   help="the largest upload to /v1/files, as the admin's (default: 200MiB)")
    g.add_argument("--replica-connections", type=int, default=0,
                   help="requests in flight to replicas at most; beyond it 429 + Retry-After "
                        "at once (default: 0, no ceiling)")
    g.add_argument("--replica-slots", type=int, default=0,
                   help="slots of a replica whose server reports none, e.g. vLLM's "
                        "--max-num-seqs (default: 0, never full)")
    add_security_flags(g)
    g.set_defaults(func=cmd_gateway)

    u = sub.add_parser("up", help="run a whole cell locally (admin, servers, gateway)",
                       description="Admin + model servers + gateway as separate processes; "
                                   "publishes the default model as /sax/test/smollm2.")
    u.add_argument("--servers", type=int, default=1, help="model servers (default: 1)")
    u.add_argument("--replicas", type=int, default=1, help="replicas to publish (default: 1)")
    u.add_argument("--lora", nargs="+", default=[], type=lora_module, metavar="SAX_NAME=PATH",
                   help="LoRA adapters (PEFT directories) to publish on the model, e.g. "
                        "/sax/test/sql=./adapters/sql")
    u.add_argument("--model", default="smollm2-135m-instruct", help="model source to publish")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    u.add_argument("--port", type=int, default=8888, help="gateway port (default: %(default)s)")
    u.add_argument("--admin-port", type=int, default=10000, help="admin port (default: 10000)")
    u.add_argument("--state", default=None, help="admin SQLite state file")
    u.add_argument("--policy", default="least_load",
                   choices=ROUTING_POLICIES)
    u.add_argument("--threads", type=int, default=0,
                   help="CPU threads split across the servers; 0 = the CPUs this process may use")
    u.add_argument("--drain-timeout", type=float, default=5.0,
                   help="seconds the servers finish running requests on Ctrl-C (default: 5)")
    u.add_argument("--group-size", type=int, default=1,
                   help="processes per model server: a tensor-parallel group (default: 1)")
    u.add_argument("--auth", action="store_true",
                   help="turn auth on: a cell credential for the members (kept beside --state) "
                        "and an admin API key, printed once")
    u.set_defaults(func=cmd_up)
    add_keys_parser(sub)
    add_tenants_parser(sub)




# ---- llmcell keys --------------------------------------------------------------------------------
def _admin_call(args: argparse.Namespace, method: str, path: str, body: dict | None = None):
    token = args.api_key or os.environ.get(API_KEY_ENV) or security(args).cell_token
    if token is None:
        raise ValueError(f"no credential: give --api-key (or ${API_KEY_ENV}) with an admin key, "
                         f"or the cell credential (--cell-token-file or ${CELL_TOKEN_ENV})")
    try:
        r = httpx.request(method, args.admin.rstrip("/") + path, json=body, timeout=30.0,
                          headers={"Authorization": f"Bearer {token}"},
                          verify=security(args).verify())
    except httpx.HTTPError as e:
        raise ValueError(f"the admin at {args.admin} is unreachable: {e}") from None
    data = r.json()
    if r.status_code != 200:
        raise ValueError(f"{method} {path}: HTTP {r.status_code}: {data.get('detail', data)}")
    return data


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30d, 12h)") from None


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "new":  # made here, for a Secret
        made = {"key": new_key, "cell-token": lambda: new_key()[len("sk-llmcell-"):],
                "master-key": encryption.new_master_key}[args.what]
        print(made())
        return 0
    if args.action == "encrypt-model":
        encryption.encrypt_file(args.source, args.destination, encryption.read_key(args.key_file))
        print(f"wrote {args.destination} (AES-256-GCM); serve it with --model-key-file",
              file=sys.stderr)
        return 0
    if args.action == "rewrap":
        encryption.rewrap(args.file, encryption.read_key(args.key_file),
                          encryption.read_key(args.new_key_file))
        return 0
    if args.action == "list":
        for record in _admin_call(args, "GET", "/keys"):
            print(json.dumps(record))
        return 0
    if args.action == "revoke":
        print(json.dumps(_admin_call(args, "DELETE", f"/keys/{args.key_id}")))
        return 0
    if args.action == "rotate":
        made = _admin_call(args, "POST", f"/keys/{args.key_id}/rotate")
    else:
        made = _admin_call(args, "POST", "/keys", {
            "tenant": args.tenant, "role": args.role, "models": args.models or [],
            "rpm": args.rpm, "tpm": args.tpm, "concurrency": args.concurrency,
            "max_priority": args.max_priority, "expires_in": args.expires})
    key = made.pop("key")
    print(json.dumps(made), file=sys.stderr)
    print(key)  # shown this once: the admin keeps only its hash
    return 0


def add_admin_client_flags(p: argparse.ArgumentParser) -> None:
    """For commands that call the admin: where it is, an admin key, and TLS."""
    p.add_argument("--admin", default="http://127.0.0.1:10000", help="admin URL")
    p.add_argument("--api-key", default=None, help=f"an admin key (default: ${API_KEY_ENV})")
    add_security_flags(p)


def add_keys_parser(sub) -> None:
    k = sub.add_parser("keys", help="API keys: create, list, revoke, rotate",
                       description="Manage the cell's API keys on its admin. A new key is "
                                   "printed once (stdout); the admin keeps only its hash.")
    add_admin_client_flags(k)
    actions = k.add_subparsers(dest="action", required=True)
    c = actions.add_parser("create", help="a new key for a tenant")
    c.add_argument("--tenant", required=True)
    c.add_argument("--role", default="user", choices=["viewer", "user", "admin"])
    c.add_argument("--models", action="append", metavar="GLOB",
                   help="Sax model paths or globs the key may use (repeatable; default: all)")
    c.add_argument("--rpm", type=int, default=None,
                   help="requests per quota window (a minute unless the admin sets another)")
    c.add_argument("--tpm", type=int, default=None,
                   help="tokens per quota window: prompt + max_tokens, settled to usage")
    c.add_argument("--concurrency", type=int, default=None, help="requests in flight at once")
    c.add_argument("--max-priority", default=None, choices=["interactive", "batch"],
                   help="the highest priority band the key's requests may ask for")
    c.add_argument("--expires", type=_duration, default=None,
                   help="lifetime, e.g. 30d, 12h (default: never)")
    actions.add_parser("list", help="every key, without secrets")
    for name, what in (("revoke", "refuse this key from now on"),
                       ("rotate", "a new key in place of this one (which is revoked)")):
        a = actions.add_parser(name, help=what)
        a.add_argument("key_id")
    n = actions.add_parser("new", help="print a fresh API key, cell credential or master key "
                                       "(for a Secret)")
    n.add_argument("what", choices=["key", "cell-token", "master-key"])
    e = actions.add_parser("encrypt-model", help="encrypt a model file under a master key "
                                                 "(AES-256-GCM; servers read it with "
                                                 "--model-key-file, in memory only)")
    e.add_argument("source")
    e.add_argument("destination")
    e.add_argument("--key-file", required=True, help="the master key")
    r = actions.add_parser("rewrap", help="rotate an encrypted file's master key (the body is "
                                          "not rewritten)")
    r.add_argument("file")
    r.add_argument("--key-file", required=True, help="the current master key")
    r.add_argument("--new-key-file", required=True, help="the new master key")
    k.set_defaults(func=cmd_keys)


# ---- llmcell tenants -----------------------------------------------------------------------------
def cmd_tenants(args: argparse.Namespace) -> int:
    if args.action == "list":
        for record in _admin_call(args, "GET", "/tenants"):
            print(json.dumps(record))
    elif args.action == "delete":
        print(json.dumps(_admin_call(args, "DELETE", f"/tenants/{args.tenant}")))
    else:
        print(json.dumps(_admin_call(args, "PUT", f"/tenants/{args.tenant}", {
            "rpm": args.rpm, "tpm": args.tpm, "concurrency": args.concurrency,
            "weight": args.weight})))
    return 0


def add_tenants_parser(sub) -> None:
    t = sub.add_parser("tenants", help="tenants' own limits and fair-queuing weights",
                       description="Limits shared by all of a tenant's keys, across the cell, "
                                   "and the tenant's weight when requests queue.")
    add_admin_client_flags(t)
    actions = t.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="set a tenant's limits and weight (replacing them)")
    s.add_argument("tenant")
    s.add_argument("--rpm", type=int, default=None, help="requests per quota window")
    s.add_argument("--tpm", type=int, default=None, help="tokens per quota window")
    s.add_argument("--concurrency", type=int, default=None, help="requests in flight at once")
    s.add_argument("--weight", type=float, default=1.0,
                   help="share of the slots when requests queue (default: 1)")
    actions.add_parser("list", help="every tenant with limits")
    d = actions.add_parser("delete", help="drop a tenant's limits (its keys keep theirs)")
    d.add_argument("tenant")
    t.set_defaults(func=cmd_tenants)
