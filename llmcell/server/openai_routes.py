"""The OpenAI API on a model server: chat, completions, the model cards, and vLLM's tokenizer
routes, each a thin route over the `ModelBackend` that the request's `model` picks.

A non-streaming request whose client disconnects is cancelled (which aborts its engine request);
a stream notices at its next write and closes its engine request too.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.edge.disconnect import CLIENT_CLOSED, ClientDisconnected, unless_disconnected
from llmcell.edge.errors import read_openai_json
from llmcell.edge.sse import EventStreamResponse
from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import model_card, parse_chat, parse_completion
from llmcell.server.backend import ModelBackend, Reply
from llmcell.server.state import ServerState


def to_response(reply: Reply) -> Response:
    if reply.stream is not None:
        return EventStreamResponse(reply.stream, close=reply.close)
    return JSONResponse(reply.body, status_code=reply.status)


def openai_routes(state: ServerState) -> list[Route]:
    host, max_body = state.host, state.config.max_body_bytes

    def serving(model: str) -> ModelBackend:
        if state.draining:
            raise APIError(503, "the server is shutting down; send the request elsewhere")
        return host.get(model)

    async def generate(request: Request, parse, method: str) -> Response:
        body = await read_openai_json(request, max_body)
        req = parse(body)
        call = getattr(serving(req.model), method)
        if req.stream:
            return to_response(await call(req, body))
        try:
            return to_response(await unless_disconnected(request, call(req, body)))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)

    async def chat(request: Request) -> Response:
        return await generate(request, parse_chat, "chat")

    async def completions(request: Request) -> Response:
        return await generate(request, parse_completion, "complete")

    def card(b: ModelBackend) -> dict:
        return model_card(b.model_name, state.created, b.max_model_len,
                          root=getattr(b, "source", None), parent=getattr(b, "parent", None))

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card(b) for b in host.ready()]})

    async def model(request: Request) -> Response:
        return JSONResponse(card(host.get(request.path_params["model_id"])))

    async def tokenize(request: Request) -> Response:
        body = await read_openai_json(request, max_body)
        return to_response(await host.pick(body.get("model")).tokenize(body))

    async def detokenize(request: Request) -> Response:
        body = await read_openai_json(request, max_body)
        return to_response(await host.pick(body.get("model")).detokenize(body))

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
    ]
