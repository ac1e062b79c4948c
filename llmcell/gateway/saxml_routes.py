"""Saxml REST on the gateway: publish, update, unpublish, listcell, listall (forwarded to the
admin) and generate (routed to a replica). v2 shapes by default, v1 with `X-Sax-Compat: v1`.

`/generate` sends the query as one user turn through the model's chat template (the default model
is a chat model) and returns `[[text, score]]`, the score being the sum of the generated tokens'
log-probabilities.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcell.gateway.admission import Admission
from llmcell.gateway.forward import Forwarder
from llmcell.gateway.usage import reservation, tokens_of
from llmcell.gateway.view import CellView
from llmcell.edge.auth import check_model, principal_of
from llmcell.edge.body import read_json
from llmcell.protocol.errors import APIError
from llmcell.protocol.saxml import (SaxError, generate_reply, parse_generate, parse_listall,
                                    parse_model_only, parse_publish)


def caller_headers(request: Request) -> tuple[str | None, str | None]:
    p = principal_of(request)
    return (None, None) if p is None or p.cell else (p.tenant, p.key_id)


def saxml_routes(admin: httpx.AsyncClient, view: CellView, forwarder: Forwarder,
                 admission: Admission, default_dialect: str, max_body: int,
                 default_reserve: int):
    """The Saxml routes and the handler that shapes their errors in the caller's dialect."""
    def dialect(request: Request) -> str:
        value = request.headers.get("x-sax-compat", default_dialect).lower()
        return "v1" if value == "v1" else "v2"

    async def body(request: Request):
        """GET /listcell?model=... also works: an empty body is the query parameters."""
        return await read_json(request, max_body, lambda status, message, code: SaxError(
            status, message), empty=dict(request.query_params), object_only=False)

    async def call_admin(request: Request, method: str, path: str, payload=None):
        """The admin's answer; the caller is named for its audit trail."""
        tenant, key_id = caller_headers(request)
        try:
            r = await admin.request(method, path, json=payload, headers={
                k: v for k, v in (("X-Llmcell-Tenant", tenant), ("X-Llmcell-Key-Id", key_id))
                if v})
        except httpx.HTTPError as e:
            raise SaxError(503, f"the admin server is unreachable ({type(e).__name__}); "
                                "model management is unavailable, serving continues") from None
        data = r.json()
        if r.status_code != 200:
            raise SaxError(r.status_code, data.get("detail", str(data)))
        return data

    def answer(request: Request, data) -> Response:
        return JSONResponse(data)

    async def root(request: Request) -> Response:
        return JSONResponse({"message": "HTTP Server for SAX Client"})

    async def publish_or_update(request: Request, method: str) -> Response:
        d = dialect(request)
        req = parse_publish(await body(request), d)
        await call_admin(request, method, "/models", req.to_json())
        await view.refresh()
        return answer(request, req.reply(d))

    async def publish(request: Request) -> Response:
        return await publish_or_update(request, "POST")

    async def update(request: Request) -> Response:
        return await publish_or_update(request, "PUT")

    async def unpublish(request: Request) -> Response:
        model = parse_model_only(await body(request), dialect(request))
        await call_admin(request, "DELETE", "/models" + model)
        await view.refresh()
        return answer(request, {"model": model})

    async def listcell(request: Request) -> Response:
        model = parse_model_only(await body(request), dialect(request))
        return answer(request, await call_admin(request, "GET", "/models" + model))

    async def listall(request: Request) -> Response:
        d = dialect(request)
        if d == "v1":
            raise SaxError(404, "listall is not part of the v1 REST API; drop X-Sax-Compat: v1")
        cell = parse_listall(await body(request), d)
        models = await call_admin(request, "GET", f"/models?cell={cell}")
        return answer(request, [m["model"] for m in models])

    async def generate(request: Request) -> Response:
        d = dialect(request)
        req = parse_generate(await body(request), d)
        if req.model not in view.view.models:
            await view.refresh()
        if req.model not in view.view.models:
            raise SaxError(404, f"model {req.model} is not published")
        check_model(request, req.model)
        request.state.model = req.model
        p = req.sampling
        chat = {"model": req.model, "messages": [{"role": "user", "content": req.query}],
                "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                "top_k": p.top_k, "logprobs": True}
        try:
            admitted = await admission.enter(request, req.model, reservation(
                chat, True, p.max_tokens, p.n, default_reserve))
            chat["priority"] = admitted.priority
            try:
                result = await forwarder.send(req.model, "/v1/chat/completions", chat, False)
            except BaseException:
                admitted.release(0)
                raise
        except APIError as e:
            raise SaxError(e.status, e.message, e.headers) from None
        admitted.release(tokens_of(result.body) if result.status == 200 else 0)
        if result.status != 200:
            raise SaxError(result.status, result.body.get("error", {}).get("message",
                                                                            str(result.body)))
        samples = []
        for choice in result.body["choices"]:
            tokens = (choice.get("logprobs") or {}).get("content") or []
            samples.append([choice["message"]["content"], sum(t["logprob"] for t in tokens)])
        return JSONResponse(generate_reply(samples, d), headers=admitted.headers)

    async def on_sax_error(request: Request, exc: SaxError) -> Response:
        d = dialect(request)
        return JSONResponse(exc.body(d), exc.status_for(d), headers=exc.headers)

    routes = [
        Route("/", root, methods=["GET"]),
        Route("/publish", publish, methods=["POST"]),
        Route("/update", update, methods=["PUT", "POST"]),
        Route("/unpublish", unpublish, methods=["POST", "DELETE"]),
        Route("/listcell", listcell, methods=["GET", "POST"]),
        Route("/listall", listall, methods=["GET", "POST"]),
        Route("/generate", generate, methods=["POST"]),
    ]
    return routes, on_sax_error
