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
    print(f"llmcell admin: listening on http://{config.host}:{config.port}; state in "
          f"{config.state_path} ({published} published model(s) restored)", file=sys.stderr,
          flush=True)
    app = create_admin_app(config, registry)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    store.close()
    return 0
