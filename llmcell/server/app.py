"""The model server's HTTP edge: an ASGI app with thin routes over the `ModelBackend`s of a
`ModelHost` (the request's `model` picks one).

Every route reads at most `max_body_bytes` (413 beyond), parses strict UTF-8 JSON (400 otherwise),
validates through `llmcell.protocol` and answers in OpenAI's shapes, errors included: bad input is
a 4xx with a message, never a 500 or a hang. A client that disconnects aborts its request.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.config.server import ServerConfig
from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import model_card, parse_chat, parse_completion
from llmcell.server.backend import ModelBackend, Reply
from llmcell.server.host import ModelHost
from llmcell.edge.errors import openai_error_handlers, read_openai_json
from llmcell.edge.metrics import metrics_response
from llmcell.server.metrics import ServerMetrics
from llmcell.edge.sse import EventStreamResponse


class ServerState:
    """What the routes share: the models, the config, metrics and the draining flag."""

    def __init__(self, config: ServerConfig, host: ModelHost, metrics: ServerMetrics) -> None:
        self.config = config
        self.host = host
        self.metrics = metrics
        self.draining = False
        self.created = int(time.time())
        self.start_error: BaseException | None = None


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def reply_or_abort(request: Request, work) -> Reply:
    """Run a non-streaming backend call; cancel it (aborting the engine request) on disconnect."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise APIError(499, "client closed the request")
    return task.result()


def to_response(reply: Reply) -> Response:
    if reply.stream is not None:
        return EventStreamResponse(reply.stream, close=reply.close)
    return JSONResponse(reply.body, status_code=reply.status)


def create_app(config: ServerConfig, host: ModelHost, metrics: ServerMetrics,
               starting=None) -> Starlette:
    """`starting`: coroutine function run in the background at start-up (loading the standalone
    model, or joining the cell); an exception it raises is reported on /ready."""
    state = ServerState(config, host, metrics)

    def serving(model: str) -> ModelBackend:
        if state.draining:
            raise APIError(503, "the server is shutting down; send the request elsewhere")
        return host.get(model)

    async def generate(request: Request, parse, method: str) -> Response:
        body = await read_openai_json(request, config.max_body_bytes)
        req = parse(body)
        call = getattr(serving(req.model), method)
        if req.stream:
            return to_response(await call(req, body))
        return to_response(await reply_or_abort(request, call(req, body)))

    async def chat(request: Request) -> Response:
        return await generate(request, parse_chat, "chat")

    async def completions(request: Request) -> Response:
        return await generate(request, parse_completion, "complete")

    async def models(request: Request) -> Response:
        cards = [model_card(b.model_name, state.created, b.max_model_len) for b in host.ready()]
        return JSONResponse({"object": "list", "data": cards})

    async def model(request: Request) -> Response:
        b = host.get(request.path_params["model_id"])
        return JSONResponse(model_card(b.model_name, state.created, b.max_model_len))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Standalone: 200 once the model is loaded and warmed. In a cell: 200 while the process
        serves (models come and go as the admin assigns them; each one's state is listed)."""
        if state.start_error is not None:
            return JSONResponse({"status": "failed", "error": str(state.start_error)}, 503)
        if state.draining:
            return JSONResponse({"status": "draining"}, 503)
        loads = {name: b.load() for name, b in host.backends.items()}
        if config.admin is None and not any(l.ready for l in loads.values()):
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "models": {
            name: {"ready": l.ready, "running": l.running, "waiting": l.waiting,
                   "kv_cache_usage": l.kv_cache_usage} for name, l in loads.items()}})

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics.render())

    async def tokenize(request: Request) -> Response:
        body = await read_openai_json(request, config.max_body_bytes)
        return to_response(await host.pick(body.get("model")).tokenize(body))

    async def detokenize(request: Request) -> Response:
        body = await read_openai_json(request, config.max_body_bytes)
        return to_response(await host.pick(body.get("model")).detokenize(body))

    @asynccontextmanager
    async def lifespan(app):
        async def start():
            try:
                if starting is not None:
                    await starting()
            except Exception as e:  # reported on /ready; the process stays up to say why
                state.start_error = e

        starter = asyncio.create_task(start())
        try:
            yield
        finally:
            starter.cancel()
            for b in list(host.backends.values()):
                await b.stop()

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=openai_error_handlers())
    app.state.server = state
    return app
