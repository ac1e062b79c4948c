"""Run the admin: open the state store (waiting, with back-off, for a PostgreSQL that does not
answer yet), build the registry and app, serve with uvicorn."""

from __future__ import annotations

import sys
import time

import uvicorn

from llmcell.admin.app import create_admin_app
from llmcell.admin.registry import CellRegistry
from llmcell.admin.database import Database, StateUnavailable
from llmcell.admin.store import ModelStore
from llmcell.config.admin import AdminConfig


def open_state(config: AdminConfig, sleep=time.sleep) -> Database:
    """The state database; a PostgreSQL that is unreachable is tried again after 1, 2, 4 ...
    seconds (at most 30), saying why each time, rather than exiting into a crash loop."""
    delay = 1.0
    while True:
        try:
            return Database.open(config.state)
        except StateUnavailable as e:
            print(f"llmcell admin: {e}; trying again in {delay:.0f} s", file=sys.stderr,
                  flush=True)
            sleep(delay)
            delay = min(30.0, delay * 2)


def run(config: AdminConfig) -> int:
    store = ModelStore(open_state(config))
    registry = CellRegistry(store, config.dead_after, time.monotonic())
    published = len(store.all())
    print(f"llmcell admin: listening on {config.security.scheme}://{config.host}:{config.port}; "
          f"auth {'on' if config.security.auth else 'off'}; state in "
          f"{store.db.where} ({published} published model(s) restored)", file=sys.stderr,
          flush=True)
    app = create_admin_app(config, registry)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                **config.security.uvicorn_tls())
    store.close()
    return 0
