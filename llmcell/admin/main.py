"""Run the admin: open the state store, build the registry and app, serve with uvicorn."""

from __future__ import annotations

import sys
import time

import uvicorn

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig


def run(config: AdminConfig) -> int:
    store = ModelStore(config.state_path)
    registry = CellRegistry(store, config.dead_after, time.monotonic())
    published = len(store.all())
    print(f"llmcell admin: listening on {config.security.scheme}://{config.host}:{config.port}; "
          f"auth {'on' if config.security.auth else 'off'}; state in "
          f"{config.state_path} ({published} published model(s) restored)", file=sys.stderr,
          flush=True)
    app = create_admin_app(config, registry)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                **config.security.uvicorn_tls())
    store.close()
    return 0
