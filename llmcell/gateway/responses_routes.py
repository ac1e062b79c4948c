"""OpenAI's Responses API at the gateway, over the chat completions path (so it works on any
replica and any engine behind the cell, with the same admission, routing and failover):
`POST /v1/responses` (streamed or not), `GET` and `DELETE /v1/responses/{id}`.

Stored responses (`store`, on by default) and the conversation behind each live in the admin's
database (admin/response_store.py), under the caller's tenant; `previous_response_id` continues
one. A response of another tenant, or one past the retention period, is not found (404).
"""

from __future__ import annotations

import json
import sys
import time
from typing import AsyncIterator, Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.edge.auth import principal_of
from llmcell.edge.errors import read_openai_json
from llmcell.edge.sse import EventStreamResponse
from llmcell.gateway.responses_convert import (StreamConverter, assistant_message,
                                               from_completion, new_id, sse)
from llmcell.protocol.errors import APIError
from llmcell.protocol.responses import RESPONSE_ID, chat_body, parse_responses

KEPT_HEADERS = ("x-llmcell-replica", "x-llmcell-attempts", "x-llmcell-cache")


def _tenant(request: Request) -> str:
    p = principal_of(request)
    return "anonymous" if p is None else p.tenant


async def _chunks(body: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    """The JSON events of a chat stream (server-sent events); read to its end, past `[DONE]`
    (the chat path may still have work then: usage, the response cache)."""
    buffer = b""
    async for piece in body:
        buffer += piece if isinstance(piece, bytes) else piece.encode()
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            for line in raw.splitlines():
                if line.startswith(b"data:"):
                    data = line[5:].strip()
                    if data != b"[DONE]":
                        yield json.loads(data)


def responses_routes(chat: Callable[[Request, dict], Awaitable[Response]],
                     admin: httpx.AsyncClient, max_body: int) -> list[Route]:
    """`chat(request, body)`: the gateway's chat completion for `body` on behalf of `request`'s
    caller."""

    def not_found(rid: str, param: str) -> APIError:
        return APIError(404, f"no response with id '{rid}' (it may have expired)", param=param,
                        code="not_found")

    async def stored(tenant: str, rid: str, param: str) -> dict:
        if not RESPONSE_ID.fullmatch(rid):
            raise not_found(rid, param)
        try:
            answer = await admin.get(f"/cell/responses/{rid}", params={"tenant": tenant})
        except httpx.HTTPError as e:
            raise APIError(503, f"the cell's admin, which keeps stored responses, is not "
                                f"reachable ({type(e).__name__}); retry shortly",
                           headers={"Retry-After": "2"}) from None
        if answer.status_code == 404:
            raise not_found(rid, param)
        if answer.status_code != 200:
            raise APIError(503, f"the admin answered {answer.status_code} for a stored "
                                "response; retry shortly", headers={"Retry-After": "2"})
        return answer.json()

    async def store(tenant: str, response: dict, messages: list[dict]) -> None:
        try:
            answer = await admin.put(f"/cell/responses/{response['id']}",
                                     params={"tenant": tenant},
                                     json={"response": response, "messages": messages})
            answer.raise_for_status()
        except httpx.HTTPError as e:  # the answer is given anyway; a follow-up will 404
            print(f"llmcell gateway: response {response['id']} was not stored: {e!r}",
                  file=sys.stderr)

    async def create(request: Request) -> Response:
        body = await read_openai_json(request, max_body)
        req = parse_responses(body)
        tenant = _tenant(request)
        history = []
        if req.previous_response_id is not None:
            history = (await stored(tenant, req.previous_response_id,
                                    "previous_response_id"))["messages"]
        chat_req = chat_body(req, history)
        if req.stream:
            chat_req["stream"] = True
            chat_req["stream_options"] = {"include_usage": True}
        answer = await chat(request, chat_req)
        headers = {k: v for k, v in answer.headers.items()
                   if k in KEPT_HEADERS or k.startswith("x-ratelimit")}
        rid, created = new_id("resp"), int(time.time())
        conversation = history + req.messages
        if not req.stream:
            if answer.status_code != 200:
                return answer
            response = from_completion(rid, created, req.echo, json.loads(answer.body))
            if req.store:
                await store(tenant, response, conversation + [
                    assistant_message(response["output"])])
            return JSONResponse(response, headers=headers)

        async def events() -> AsyncIterator[bytes]:
            inner = answer.body_iterator
            conv = StreamConverter(rid, created, req.chat["model"], req.echo)
            for e in conv.start():
                yield sse(e)
            try:
                async for chunk in _chunks(inner):
                    if "error" in chunk:
                        for e in conv.failed(chunk["error"]):
                            yield sse(e)
                        return
                    conv.model = chunk.get("model") or conv.model
                    for e in conv.feed(chunk):
                        yield sse(e)
            finally:
                if (aclose := getattr(inner, "aclose", None)) is not None:
                    await aclose()
                if getattr(answer, "on_close", None) is not None:
                    answer.on_close()
            for e in conv.finish():
                yield sse(e)
            if req.store:
                await store(tenant, conv.response, conversation + [
                    assistant_message(conv.output)])

        return EventStreamResponse(events(), headers=headers)

    async def retrieve(request: Request) -> Response:
        rid = request.path_params["rid"]
        return JSONResponse((await stored(_tenant(request), rid, "response_id"))["response"])

    async def delete(request: Request) -> Response:
        rid = request.path_params["rid"]
        if not RESPONSE_ID.fullmatch(rid):
            raise not_found(rid, "response_id")
        try:
            answer = await admin.delete(f"/cell/responses/{rid}",
                                        params={"tenant": _tenant(request)})
        except httpx.HTTPError as e:
            raise APIError(503, f"the cell's admin is not reachable ({type(e).__name__})",
                           headers={"Retry-After": "2"}) from None
        if answer.status_code == 404:
            raise not_found(rid, "response_id")
        return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})

    return [Route("/v1/responses", create, methods=["POST"]),
            Route("/v1/responses/{rid}", retrieve, methods=["GET"]),
            Route("/v1/responses/{rid}", delete, methods=["DELETE"])]
