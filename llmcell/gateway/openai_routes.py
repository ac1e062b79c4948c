"""OpenAI API on the gateway: chat and completions routed to a replica of the named model
(a Sax path or its last component), and the models with at least one active replica.

Requests are validated here, at the edge, so bad input never reaches a replica. They are then
admitted (gateway/admission.py: the caller's quotas, a slot by fair queuing) and forwarded with
`model` set to the Sax path and `priority` to the band's (the engines run online work first). Streams pass through as they arrive.
"""

from __future__ import annotations

import json
import time
from typing import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.gateway.admission import Admission
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.kv_follow import KVFollower
from llmcell.gateway.route_inputs import route_inputs
from llmcell.gateway.usage import UsageTap, reservation, tokens_of
from llmcell.gateway.view import CellView
from llmcell.gateway.response_cache import Cached, ResponseCache, cacheable, directives
from llmcell.gateway.responses_routes import responses_routes
from llmcell.gateway.resume import Resumable
from llmcell.protocol.openai import CONTINUATION, model_card, parse_chat, parse_completion
from llmcell.edge.auth import check_model, principal_of
from llmcell.edge.disconnect import CLIENT_CLOSED, ClientDisconnected, unless_disconnected
from llmcell.edge.errors import read_openai_json
from llmcell.edge.sse import EventStreamResponse


def openai_routes(view: CellView, forwarder: Forwarder, admission: Admission, max_body: int,
                  prefix_chars: int, default_reserve: int, retries: int,
                  cache: ResponseCache, on_resumed=lambda model: None,
                  on_cache=lambda model, outcome: None,
                  kv: KVFollower | None = None,
                  admin: httpx.AsyncClient | None = None) -> list[Route]:
    """`on_resumed(model)`: a stream went on on another replica; `on_cache(model, "hit" or
    "miss")`: a cacheable request (metrics); `kv`: what the replicas cache (kv_affinity);
    `admin`: where stored responses live (the Responses API; None: not served)."""
    created = int(time.time())  # the cards' `created`: when this gateway started serving

    def cache_key(request: Request, model: str, body: dict) -> tuple[str | None, bool]:
        """The request's cache key (None: not cached) and whether a cached answer may serve."""
        if not cache.enabled or not cacheable(body):
            return None, False
        asked = directives(request.headers.get("cache-control"))
        if "no-store" in asked:
            return None, False
        caller = principal_of(request)
        tenant = "anonymous" if caller is None else caller.tenant
        checkpoint = view.view.checkpoints.get(model, "")
        return cache.key(tenant, model, checkpoint, body), "no-cache" not in asked

    async def replay(request: Request, model: str, hit: Cached, tokens: int) -> Response:
        """A cached answer: the quotas still count it; no replica is asked."""
        try:
            admitted = await unless_disconnected(request, admission.enter(
                request, model, tokens, slot=False))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
        admitted.release(hit.tokens)
        on_cache(model, "hit")
        headers = {"X-Llmcell-Cache": "hit", **admitted.headers}
        if hit.stream:
            return EventStreamResponse(_replayed(hit.body), headers=headers)
        return Response(hit.body, media_type="application/json", headers=headers)

    async def generate(request: Request, chat: bool, body: dict | None = None) -> Response:
        """`body`: given by another route of the gateway (the Responses API), else read."""
        if body is None:
            body = await read_openai_json(request, max_body)
        req = (parse_chat if chat else parse_completion)(body)
        model = view.resolve(req.model)
        check_model(request, model)
        request.state.model = model  # the metrics label: only published names get here
        path = "/v1/chat/completions" if chat else "/v1/completions"
        tokens = reservation(body, chat, req.sampling.max_tokens, req.sampling.n,
                             default_reserve)
        ckey, read = cache_key(request, model, body)
        checkpoint = view.view.checkpoints.get(model, "")
        if ckey is not None and read and (hit := cache.get(ckey, checkpoint)) is not None:
            return await replay(request, model, hit, tokens)
        try:
            admitted = await unless_disconnected(request, admission.enter(request, model, tokens))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
        forward = dict(body, model=model, priority=admitted.priority)  # the band, not the body's
        forward.pop(CONTINUATION, None)  # between the cell's members only
        movable = req.stream and req.sampling.n == 1 and (  # not with tools: the server
            (chat and req.tools is None)  # holds back tool-call text, so what the client saw
            or (not chat and len(req.prompts) == 1 and not req.echo))  # is not its tokens
        if movable:
            forward["return_token_ids"] = True
        if req.stream and admitted.counts_tokens and not req.include_usage:
            forward["stream_options"] = {**(body.get("stream_options") or {}),
                                         "include_usage": True}
        key, cached = route_inputs(body, req, chat, model, prefix_chars, kv)
        try:
            result = await unless_disconnected(request, forwarder.send(
                model, path, forward, req.stream, key, cached=cached))
        except ClientDisconnected:  # the replica's request was closed with it: it aborts
            admitted.release(None)
            return Response(status_code=CLIENT_CLOSED)
        except BaseException:
            admitted.release(0)
            raise
        headers = {"X-Llmcell-Replica": result.replica, "X-Llmcell-Attempts": str(result.attempts),
                   **admitted.headers}
        store = None
        if ckey is not None:
            on_cache(model, "miss")
            headers["X-Llmcell-Cache"] = "miss"
            store = lambda data, stream, used: cache.put(  # noqa: E731
                ckey, data, stream, used, model, checkpoint)
        if result.stream is not None:
            broken = lambda: setattr(request.state, "stream_broken", True)  # noqa: E731
            stream = result.stream
            if movable:  # a break is the resumer's to handle
                stream = aiter(Resumable(forwarder, model, path, forward, result, key, retries,
                                         req.return_token_ids, broken,
                                         lambda: on_resumed(model)))
            else:
                result.on_broken = broken
            if admitted.counts_tokens:
                stream = UsageTap(stream, req.include_usage, admitted.release)
            else:
                stream = _released(stream, admitted.release)
            if store is not None:
                stream = _recorded(stream, lambda data: store(data, True, None))
            return EventStreamResponse(stream, headers=headers)
        admitted.release(tokens_of(result.body) if result.status == 200 else 0)
        data = result.raw if result.raw is not None else json.dumps(
            result.body, ensure_ascii=False, separators=(",", ":")).encode()
        if store is not None and result.status == 200:
            store(data, False, tokens_of(result.body))
        return Response(data, result.status, media_type="application/json", headers=headers)

    async def chat(request: Request) -> Response:
        return await generate(request, True)

    async def completions(request: Request) -> Response:
        return await generate(request, False)

    def card(model: str) -> dict:
        """The smallest context window among the model's replicas: what every one accepts."""
        lengths = [r.max_model_len for r in view.view.models.get(model, []) if r.max_model_len]
        return model_card(model, created, min(lengths, default=0),
                          root=view.view.sources.get(model), parent=view.view.bases.get(model))

    async def models(request: Request) -> Response:
        caller = principal_of(request)
        cards = [card(m) for m, rs in sorted(view.view.models.items())
                 if rs and (caller is None or caller.may_use(m))]
        return JSONResponse({"object": "list", "data": cards})

    async def model(request: Request) -> Response:
        model = view.resolve(request.path_params["model_id"])
        check_model(request, model)
        return JSONResponse(card(model))

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        *(responses_routes(lambda request, body: generate(request, True, body), admin,
                           max_body) if admin is not None else []),
    ]


async def _recorded(stream: AsyncIterator[bytes], keep) -> AsyncIterator[bytes]:
    """The stream as it goes to the client; once it ended whole (`[DONE]`, no error event),
    `keep(all of it)`."""
    parts = []
    async for chunk in stream:
        parts.append(chunk)
        yield chunk
    data = b"".join(parts)
    if data.rstrip().endswith(b"data: [DONE]") and b'data: {"error"' not in data:
        keep(data)


async def _replayed(data: bytes) -> AsyncIterator[bytes]:
    for item in data.split(b"\n\n"):
        if item.strip():
            yield item + b"\n\n"


async def _released(stream: AsyncIterator[bytes], release) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        release(None)
