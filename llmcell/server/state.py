"""What a model server's routes share: its models, its config, its metrics and whether it is
draining (set on shutdown: new requests get 503, /ready turns 503)."""

from __future__ import annotations

import time

from llmcell.config.server import ServerConfig
from llmcell.server.host import ModelHost
from llmcell.server.metrics import ServerMetrics


class ServerState:
    def __init__(self, config: ServerConfig, host: ModelHost, metrics: ServerMetrics) -> None:
        self.config = config
        self.host = host
        self.metrics = metrics
        self.draining = False
        self.created = int(time.time())
        """The model cards' `created`: when this server started."""
        self.start_error: BaseException | None = None
