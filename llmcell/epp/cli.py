"""`llmcell epp`: the endpoint picker's command line (the security flags come from the caller,
so that this package imports nothing of the cell's other commands)."""

from __future__ import annotations

import argparse
from typing import Callable

from llmcell.config.gateway import POLICIES


def add_epp_parser(sub, add_security_flags: Callable[[argparse.ArgumentParser], None],
                   security: Callable[[argparse.Namespace], object]) -> None:
    e = sub.add_parser("epp", help="run the endpoint picker for a Gateway API inference gateway",
                       description="Envoy ext_proc (the Gateway API Inference Extension's endpoint "
                                   "picker protocol): the data plane asks where each request "
                                   "goes, the cell's routing answers.")
    e.add_argument("--admin", default="http://127.0.0.1:10000", help="admin URL")
    e.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    e.add_argument("--port", type=int, default=9002, help="ext_proc gRPC port (default: 9002)")
    e.add_argument("--metrics-port", type=int, default=9090,
                   help="Prometheus metrics port, 0 for none (default: 9090)")
    e.add_argument("--health-port", type=int, default=9003,
                   help="plaintext gRPC health port for probes, 0 for none (default: 9003)")
    e.add_argument("--policy", default="least_load", choices=POLICIES,
                   help="routing policy (default: %(default)s)")
    e.add_argument("--fallbacks", type=int, default=0,
                   help="endpoints named after the picked one, for data planes that retry down "
                        "the list (default: 0, one endpoint)")
    e.add_argument("--self-signed", action="store_true",
                   help="serve gRPC over TLS with a certificate made at start, as inference "
                        "gateways expect of a picker (without --tls-cert)")
    add_security_flags(e)

    def cmd_epp(args: argparse.Namespace) -> int:
        from llmcell.config.epp import EppConfig
        from llmcell.epp.main import run

        return run(EppConfig(admin=args.admin, host=args.host, port=args.port,
                             metrics_port=args.metrics_port, health_port=args.health_port,
                             policy=args.policy, fallbacks=args.fallbacks,
                             self_signed=args.self_signed, security=security(args)))

    e.set_defaults(func=cmd_epp)
