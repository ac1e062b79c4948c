"""What a model server tells the gateways about its prefix caches (KV-aware routing), on routes
only the cell's members call (`/cell/*`):

- `GET /cell/kv_events?model=M&since=N&epoch=E&wait=S`: the keys the model's engine stored and
  evicted after event N of epoch E (protocol/kv_events.py), or a snapshot; with `wait`, the call
  waits up to S seconds (at most 10) for a change, so a follower hears of one at once with one
  call outstanding.
- `GET /cell/tokenizer?model=M`: the model's tokenizer and chat template (a spec,
  tokenizer/tokenizer.py), the block size and the hash scheme, so a gateway tokenizes a request
  exactly as this server does and computes the same keys.

A model with no such source (an external engine) answers 404 with code `kv_events_unavailable`.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.protocol.errors import APIError, invalid
from llmcell.protocol.kv_events import HASH_SCHEME
from llmcell.server.backend import PrefixCacheSource
from llmcell.server.host import ModelHost

MAX_WAIT = 10.0
POLL = 0.05


def _number(request: Request, name: str, default: float, kind=int) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise invalid(f"'{name}' must be a number, got {raw!r}", name) from None
    if value < 0:
        raise invalid(f"'{name}' must be >= 0, got {raw}", name)
    return value


def prefix_routes(host: ModelHost) -> list[Route]:
    def source(request: Request) -> PrefixCacheSource:
        model = request.query_params.get("model", "")
        found = host.pick(model).prefix_cache()
        if found is None:
            raise APIError(404, f"model {model!r} has no prefix-cache events here (an external "
                                "engine, or still loading)", param="model",
                           code="kv_events_unavailable")
        return found

    async def kv_events(request: Request) -> Response:
        since = int(_number(request, "since", 0))
        wait = min(MAX_WAIT, _number(request, "wait", 0.0, float))
        epoch = request.query_params.get("epoch")
        log = source(request).events
        deadline = time.monotonic() + wait
        while log.epoch == epoch and log.seq == since and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
        return JSONResponse(log.since(since, epoch).to_json())

    async def tokenizer(request: Request) -> Response:
        found = source(request)
        return JSONResponse({"tokenizer": found.tokenizer.to_spec(),
                             "block_size": found.events.block_size, "hash_scheme": HASH_SCHEME})

    return [Route("/cell/kv_events", kv_events, methods=["GET"]),
            Route("/cell/tokenizer", tokenizer, methods=["GET"])]
