"""OpenAI's Files and Batch API, served by the admin (the gateways pass these routes through,
gateway/admin_proxy.py), answered in OpenAI's shapes so the official client works unchanged.

Files and batches belong to the caller's tenant: another tenant's are not found. A batch is
checked whole when it is created (its file, endpoint, models, duplicate `custom_id`s: 400
naming what is wrong) and then run by the batch runner (batch/runner.py); a line that fails the
online API's checks goes to the batch's error file and the rest goes on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmcell.admin.registry import CellRegistry
from llmcell.batch.blobs import Blobs
from llmcell.batch.runner import expires_at, read_lines
from llmcell.batch.store import BatchStore, new_id
from llmcell.config.admin import AdminConfig
from llmcell.edge.auth import principal_of
from llmcell.edge.errors import read_openai_json
from llmcell.protocol.batch import PURPOSES, BatchLine, BatchObject, FileObject, check_create
from llmcell.protocol.errors import APIError

ANONYMOUS = "anonymous"


def _tenant(request: Request) -> str | None:
    """Whose files these are; None for the cell's own credential (it sees every tenant's)."""
    p = principal_of(request)
    if p is None:
        return ANONYMOUS
    return None if p.cell else p.tenant


def _limit(request: Request, default: int = 20, most: int = 100) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise APIError(400, f"limit={raw!r} must be an integer from 1 to {most}", param="limit",
                       code="invalid_value")
    return int(raw)


def _page(items: list[dict], more: bool) -> dict:
    return {"object": "list", "data": items, "has_more": more,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None}


def _limited(request: Request, most: int) -> Callable:
    """The request's receive, refusing a body past `most` bytes as it arrives."""
    seen = [0]
    receive = request.receive

    async def limited():
        message = await receive()
        seen[0] += len(message.get("body", b""))
        if seen[0] > most:
            raise APIError(413, f"the upload is over the file limit of {most} bytes",
                           param="file", code="file_too_large")
        return message
    return limited


def batch_routes(config: AdminConfig, registry: CellRegistry, store: BatchStore, blobs: Blobs,
                 runner_ready: Callable[[], bool]) -> list[Route]:
    def owned(request: Request, found, kind: str, ident: str):
        """`found` if the caller's tenant owns it; else a 404 (whether or not it exists)."""
        tenant = _tenant(request)
        if found is None or (tenant is not None and found.tenant != tenant):
            raise APIError(404, f"no {kind} {ident}", param=f"{kind}_id",
                           code=f"{kind}_not_found")
        return found

    def own_file(request: Request, file_id: str) -> FileObject:
        return owned(request, store.file(file_id), "file", file_id)

    def own_batch(request: Request, batch_id: str) -> BatchObject:
        return owned(request, store.batch(batch_id), "batch", batch_id)

    # ---- files ---------------------------------------------------------------------------------
    async def upload(request: Request) -> Response:
        most = config.max_file_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > most + 64 * 1024:
            raise APIError(413, f"the upload ({length} bytes) is over the file limit of {most} "
                                "bytes", param="file", code="file_too_large")
        limited = Request(request.scope, _limited(request, most + 64 * 1024))
        try:
            form = await limited.form(max_files=1, max_fields=8)
        except APIError:
            raise
        except Exception as e:  # a malformed multipart body
            raise APIError(400, f"the body must be multipart/form-data with a file and a "
                                f"purpose: {e}", param="file") from None
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose not in PURPOSES:
            raise APIError(400, f"purpose={purpose!r} is not supported; one of "
                                f"{', '.join(PURPOSES)}", param="purpose", code="invalid_value")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "file is required (a JSONL file, as multipart form data)",
                           param="file")
        f = FileObject(new_id("file-"), _tenant(request) or "cell", upload.filename or "upload",
                       purpose, 0, int(time.time()))
        lines = [0]

        def chunks():
            upload.file.seek(0)
            while chunk := upload.file.read(1 << 20):
                lines[0] += chunk.count(b"\n")
                yield chunk
            if lines[0] > config.max_file_lines:
                raise APIError(400, f"the file has more than {config.max_file_lines} lines, "
                                    "the limit of a batch's input", param="file")

        size = await asyncio.to_thread(blobs.put, f.id, chunks())
        if size > most:
            blobs.delete(f.id)
            raise APIError(413, f"the file ({size} bytes) is over the limit of {most} bytes",
                           param="file", code="file_too_large")
        f = FileObject(f.id, f.tenant, f.filename, f.purpose, size, f.created_at, lines[0])
        store.add_file(f)
        return JSONResponse(f.to_json())

    async def list_files(request: Request) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise APIError(400, f"order={order!r} must be asc or desc", param="order")
        files, more = store.files(_tenant(request), request.query_params.get("purpose"),
                                  request.query_params.get("after"), _limit(request, 10000, 10000),
                                  order == "desc")
        return JSONResponse(_page([f.to_json() for f in files], more))

    async def get_file(request: Request) -> Response:
        return JSONResponse(own_file(request, request.path_params["file_id"]).to_json())

    async def delete_file(request: Request) -> Response:
        f = own_file(request, request.path_params["file_id"])
        store.delete_file(f.id)
        blobs.delete(f.id)
        return JSONResponse({"id": f.id, "object": "file", "deleted": True})

    async def content(request: Request) -> Response:
        f = own_file(request, request.path_params["file_id"])
        return StreamingResponse(blobs.read(f.id), media_type="application/jsonl")

    # ---- batches -------------------------------------------------------------------------------
    def check_lines(request: Request, lines: list) -> None:
        """400 for what makes the whole batch wrong: no requests, a repeated custom_id, a model
        the cell does not serve (or the key may not use)."""
        if not lines:
            raise APIError(400, "the input file has no requests", param="input_file_id")
        seen: dict[str, int] = {}
        published = [spec.model for spec in registry.store.all()]
        caller = principal_of(request)
        for item in lines:
            if not isinstance(item, BatchLine):
                continue
            first = seen.setdefault(item.custom_id, item.line)
            if first != item.line:
                raise APIError(400, f"custom_id {item.custom_id!r} is on lines {first} and "
                                    f"{item.line}; each request needs its own",
                               param="input_file_id", code="duplicate_custom_id")
            matches = [m for m in published
                       if m == item.model or m.rsplit("/", 1)[-1] == item.model]
            if len(matches) != 1:
                raise APIError(400, f"line {item.line}: the model {item.model!r} is not served "
                                    f"here; published: {', '.join(published) or 'none'}",
                               param="model", code="model_not_found")
            if caller is not None and not caller.may_use(matches[0]):
                raise APIError(403, f"line {item.line}: key {caller.key_id} may not use the "
                                    f"model {matches[0]}", param="model",
                               code="model_not_allowed")

    async def create(request: Request) -> Response:
        file_id, endpoint, window, metadata = check_create(
            await read_openai_json(request, config.max_body_bytes))
        f = own_file(request, file_id)
        if f.purpose != "batch":
            raise APIError(400, f"the file {file_id} has purpose {f.purpose}, not batch",
                           param="input_file_id")
        if not runner_ready():
            raise APIError(503, "this cell runs no batches: start the admin with "
                                "--batch-gateway URL (llmcell up does)", code="batch_disabled")
        try:
            lines = await asyncio.to_thread(read_lines, blobs, f.id, endpoint)
        except FileNotFoundError:
            raise APIError(404, f"the file {file_id} has no content", param="input_file_id",
                           code="file_not_found") from None
        check_lines(request, lines)
        now = int(time.time())
        b = BatchObject(new_id("batch_"), f.tenant, f.id, endpoint, window, "validating", now,
                        expires_at(now, window), metadata, len(lines))
        store.add_batch(b)
        return JSONResponse(b.to_json())

    async def list_batches(request: Request) -> Response:
        found, more = store.batches(_tenant(request), request.query_params.get("after"),
                                    _limit(request))
        return JSONResponse(_page([b.to_json() for b in found], more))

    async def get_batch(request: Request) -> Response:
        return JSONResponse(own_batch(request, request.path_params["batch_id"]).to_json())

    async def cancel(request: Request) -> Response:
        b = own_batch(request, request.path_params["batch_id"])
        if b.status in ("validating", "in_progress"):
            store.move(b, "cancelling")
        elif b.status != "cancelling":
            raise APIError(409, f"the batch {b.id} is {b.status}: only a validating or "
                                "in_progress batch can be cancelled", param="batch_id",
                           code="batch_not_cancellable")
        return JSONResponse(b.to_json())

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
        Route("/v1/batches", create, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
    ]
