"""The model server's HTTP edge: an ASGI app with thin routes over a `ModelBackend`.

Every route reads at most `max_body_bytes` (413 beyond), parses strict UTF-8 JSON (400 otherwise),
validates through `llmcell.protocol` and answers in OpenAI's shapes, errors included: bad input is
a 4xx with a message, never a 500 or a hang. A client that disconnects aborts its request.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmcell.config.server import ServerConfig
from llmcell.protocol.errors import APIError, invalid
from llmcell.protocol.openai import model_card, not_found_model, parse_chat, parse_completion
from llmcell.server.backend import ModelBackend, Reply
from llmcell.server.metrics import CONTENT_TYPE, ServerMetrics


class ServerState:
    """What the routes share: the backend, the config, metrics and the draining flag."""

    def __init__(self, config: ServerConfig, backend: ModelBackend, metrics: ServerMetrics) -> None:
        self.config = config
        self.backend = backend
        self.metrics = metrics
        self.draining = False
        self.created = int(time.time())
        self.start_error: BaseException | None = None


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_json(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                       code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes",
                               code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, "the client disconnected while sending the body") from None
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"the request body is not valid UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise invalid("the request body is empty; send a JSON object")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e.msg} at line {e.lineno} "
                      f"column {e.colno}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


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
        return StreamingResponse(reply.stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(reply.body, status_code=reply.status)


def create_app(config: ServerConfig, backend: ModelBackend, metrics: ServerMetrics) -> Starlette:
    state = ServerState(config, backend, metrics)

    def check_serving(model: str) -> None:
        if state.draining:
            raise APIError(503, "the server is shutting down; send the request elsewhere")
        if model != backend.model_name:
            raise not_found_model(model, [backend.model_name])

    async def generate(request: Request, parse, call) -> Response:
        body = await read_json(request, config.max_body_bytes)
        req = parse(body)
        check_serving(req.model)
        if req.stream:
            return to_response(await call(req, body))
        return to_response(await reply_or_abort(request, call(req, body)))

    async def chat(request: Request) -> Response:
        return await generate(request, parse_chat, backend.chat)

    async def completions(request: Request) -> Response:
        return await generate(request, parse_completion, backend.complete)

    async def models(request: Request) -> Response:
        cards = [model_card(backend.model_name, state.created, backend.max_model_len)]
        return JSONResponse({"object": "list", "data": cards if backend.load().ready else []})

    async def model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        if model_id != backend.model_name:
            raise not_found_model(model_id, [backend.model_name])
        return JSONResponse(model_card(backend.model_name, state.created, backend.max_model_len))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        load = backend.load()
        if state.start_error is not None:
            return JSONResponse({"status": "failed", "error": str(state.start_error)}, 503)
        if state.draining:
            return JSONResponse({"status": "draining"}, 503)
        if not load.ready:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "running": load.running, "waiting": load.waiting,
                             "kv_cache_usage": load.kv_cache_usage})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def tokenize(request: Request) -> Response:
        body = await read_json(request, config.max_body_bytes)
        return to_response(await backend.tokenize(body))

    async def detokenize(request: Request) -> Response:
        body = await read_json(request, config.max_body_bytes)
        return to_response(await backend.detokenize(body))

    async def on_api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        msg = {404: f"no route for {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}
        return error_response(APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail))))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}"))

    @asynccontextmanager
    async def lifespan(app):
        async def start():
            try:
                await backend.start()
            except Exception as e:  # reported on /ready; the process stays up to say why
                state.start_error = e

        starter = asyncio.create_task(start())
        try:
            yield
        finally:
            starter.cancel()
            await backend.stop()

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
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        APIError: on_api_error, HTTPException: on_http_error, Exception: on_unexpected})
    app.state.server = state
    return app
