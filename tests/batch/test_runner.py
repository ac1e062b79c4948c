"""The batch runner over a real SQLite store and blob folder, sending to a stand-in gateway (an
ASGI app that answers with the line's custom text, and 503 or a dropped connection now and
then). Runners are stopped mid-batch (their task cancelled, in-flight requests lost, as with
`kill -9`) and a new one over the same files resumes: each line is answered once in the output,
in input order, and the counts agree with the files."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmcell.admin.database import Database
from llmcell.batch.blobs import Blobs
from llmcell.batch.runner import BatchRunner, output_file_ids
from llmcell.batch.store import BatchStore
from llmcell.protocol.batch import BatchObject, FileObject

CHAT = "/v1/chat/completions"


def stand_in_gateway(seen: list, rng: random.Random, flaky: float) -> Starlette:
    async def chat(request: Request):
        body = await request.json()
        seen.append((request.headers["x-llmcell-priority"], request.headers["x-request-id"]))
        await asyncio.sleep(rng.random() * 0.01)
        if rng.random() < flaky:
            return JSONResponse({"error": {"message": "busy"}}, 503,
                                headers={"Retry-After": "0"})
        if body["max_tokens"] == 13:
            return JSONResponse({"error": {"message": "too long", "param": "max_tokens"}}, 400)
        text = body["messages"][0]["content"]
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": text}}],
                             "usage": {"total_tokens": 5}})
    return Starlette(routes=[Route(CHAT, chat, methods=["POST"])])


def setup(tmp_path, n: int, extra: list[str] = ()) -> tuple[BatchStore, Blobs, BatchObject]:
    db = Database.open(tmp_path / "state.sqlite3")
    store, blobs = BatchStore(db), Blobs(str(tmp_path / "files"))
    lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": {
        "model": "m", "max_tokens": 13 if i == 5 else 4,
        "messages": [{"role": "user", "content": f"answer {i}"}]}}) for i in range(n)]
    lines[10:10] = list(extra)
    data = ("\n".join(lines) + "\n").encode()
    blobs.put("file-in", [data])
    store.add_file(FileObject("file-in", "t", "in.jsonl", "batch", len(data), 0, len(lines)))
    now = int(time.time())
    b = BatchObject("batch_x", "t", "file-in", CHAT, "24h", "validating", now, now + 86400)
    store.add_batch(b)
    return store, blobs, b


def runner(store, blobs, app, concurrency=8) -> BatchRunner:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return BatchRunner(store, blobs, client, lambda: concurrency, poll=0.02)


async def run_until(r: BatchRunner, store: BatchStore, done, timeout=30.0) -> None:
    task = asyncio.create_task(r.run())
    deadline = time.monotonic() + timeout
    try:
        while not done(store.batch("batch_x")):
            assert time.monotonic() < deadline, store.batch("batch_x")
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def interrupted(r: BatchRunner, store: BatchStore, after: int, act, until: str) -> None:
    """Run `r` until `after` lines are answered, then `act()`, and on until the batch is
    `until`."""
    task = asyncio.create_task(r.run())
    try:
        while store.batch("batch_x").completed < after:
            await asyncio.sleep(0.005)
        act()
        while store.batch("batch_x").status != until:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_batch_resumes_after_each_kill_and_answers_every_line_once(tmp_path):
    store, blobs, _ = setup(tmp_path, 200, extra=["not json"])
    rng = random.Random(3)
    seen: list = []
    app = stand_in_gateway(seen, rng, flaky=0.1)

    async def main():
        for stop_at in (15, 60, 61, 130):  # stop the runner at these many results
            await run_until(runner(store, blobs, app), store,
                            lambda b: b.completed + b.failed >= stop_at or b.status == "completed")
        await run_until(runner(store, blobs, app), store, lambda b: b.status == "completed")

    asyncio.run(main())
    b = store.batch("batch_x")
    assert (b.total, b.completed, b.failed) == (201, 199, 2)
    out_id, err_id = output_file_ids(b.id)
    assert (b.output_file_id, b.error_file_id) == (out_id, err_id)
    out = [json.loads(x) for x in blobs.lines(out_id)]
    assert [x["custom_id"] for x in out] == [f"r{i}" for i in range(200) if i != 5]
    assert all(x["response"]["body"]["choices"][0]["message"]["content"]
               == f"answer {x['custom_id'][1:]}" for x in out)
    errors = [json.loads(x) for x in blobs.lines(err_id)]
    assert [(e["custom_id"], e["error"] and e["error"]["line"]) for e in errors] == [
        ("r5", None), (None, 11)]
    assert errors[0]["response"]["status_code"] == 400
    assert {p for p, _ in seen} == {"batch"}
    assert len(seen) > 200  # the 503s were sent again, and lines in flight at a kill too
    assert store.totals() == {"completed": 199, "failed": 2, "tokens": 199 * 5}


def test_a_cancelled_batch_writes_what_was_answered(tmp_path):
    store, blobs, b = setup(tmp_path, 100)
    app = stand_in_gateway([], random.Random(1), flaky=0.0)

    asyncio.run(interrupted(runner(store, blobs, app, concurrency=2), store, 10,
                            lambda: store.move(store.batch("batch_x"), "cancelling"),
                            "cancelled"))
    b = store.batch("batch_x")
    assert 10 <= b.completed < 99 and b.times["cancelled_at"]
    assert len(list(blobs.lines(b.output_file_id))) == b.completed


def test_a_batch_past_its_window_expires_with_its_answers_kept(tmp_path):
    store, blobs, b = setup(tmp_path, 20)
    clock = [time.time()]
    app = stand_in_gateway([], random.Random(1), flaky=0.0)

    r = runner(store, blobs, app, concurrency=1)
    r.clock = lambda: clock[0]
    asyncio.run(interrupted(r, store, 3, lambda: clock.__setitem__(0, clock[0] + 86400),
                            "expired"))
    b = store.batch("batch_x")
    assert b.status == "expired" and 3 <= b.completed < 20 and b.output_file_id


def test_a_batch_whose_input_is_gone_fails_saying_so(tmp_path):
    store, blobs, b = setup(tmp_path, 3)
    blobs.delete("file-in")
    asyncio.run(run_until(runner(store, blobs, stand_in_gateway([], random.Random(), 0)), store,
                          lambda b: b.status == "failed"))
    assert store.batch("batch_x").errors[0]["code"] == "file_not_found"


def test_the_store_pages_newest_first(tmp_path):
    store, _, _ = setup(tmp_path, 1)
    for i in range(4):
        store.add_batch(BatchObject(f"batch_{i}", "t", "file-in", CHAT, "24h", "completed", i,
                                    i + 1))
    first, more = store.batches("t", None, 2)
    assert [b.id for b in first] == ["batch_3", "batch_2"] and more
    rest, more = store.batches("t", "batch_2", 10)
    assert [b.id for b in rest] == ["batch_1", "batch_0", "batch_x"] and not more
    assert store.batches("other", None, 10) == ([], False)
