"""Run the gateway with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from llmcell.config.gateway import GatewayConfig
from llmcell.gateway.app import create_gateway_app
from llmcell.edge.http_protocol import LISTEN_BACKLOG, http_protocol


def run(config: GatewayConfig) -> int:
    scheme = config.security.scheme
    auth = "auth on" if config.security.auth else "auth off"
    print(f"llmcell gateway: listening on {scheme}://{config.host}:{config.port} (admin "
          f"{config.admin}, routing {config.policy}, {auth})", file=sys.stderr, flush=True)
    uvicorn.run(create_gateway_app(config), host=config.host, port=config.port,
                log_level="warning", access_log=False, http=http_protocol(),
                backlog=LISTEN_BACKLOG,
                timeout_graceful_shutdown=config.drain_timeout, **config.security.uvicorn_tls())
    return 0
