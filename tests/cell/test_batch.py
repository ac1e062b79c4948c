"""The OpenAI Files and Batch API on a real cell (admin, two model servers, a gateway, auth on),
driven by the official `openai` client: upload, create, poll to `completed`, download every
`custom_id` once with a real answer; per-line errors with their line numbers; listing and
pagination; cancel mid-run; bad input answered 4xx (a 2 GB upload refused before it is read);
and `kill -9` of the admin (which runs the batches) three times and of a model server once
while a batch of 300 runs: each `custom_id` is in the output exactly once."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from llmcell.batch.client import BatchClient
from llmcell.protocol.auth import new_key
from tests.cell.conftest import HEARTBEAT, Cell, Proc
from tests.server.conftest import free_port

TOKEN = "cell-credential-for-batch-tests-" + "b" * 14
ADMIN_KEY = new_key()


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    c = Cell(tmp, TOKEN)
    gateway_port = free_port()
    try:  # whatever started is stopped, a setup that failed midway too
        c.admin = Proc("admin", "--state", str(tmp / "admin.sqlite3"), "--heartbeat-interval",
                       HEARTBEAT, "--kv-reserve", "256MiB", "--max-file-bytes", "1MiB",
                       "--batch-concurrency", "8",
                       "--batch-gateway", f"http://127.0.0.1:{gateway_port}",
                       env=dict(c.env, LLMCELL_ADMIN_KEY=ADMIN_KEY))
        c.procs.append(c.admin)
        c.admin.wait()
        c.api_key = ADMIN_KEY
        c.servers = [c.start_server(f"server-{i}", memory="1536MiB") for i in range(2)]
        c.gateway = Proc("gateway", "--admin", c.admin.url, "--max-file-bytes", "1MiB",
                         port=gateway_port, env=c.env)
        c.procs.append(c.gateway)
        c.gateway.wait()
        c.publish(2)
        c.wait_active(2)
        c.keys = {t: make_key(c, t) for t in ("team-a", "team-b")}
        time.sleep(1.0)  # the gateway follows the key table
        yield c
    finally:
        c.stop()


def make_key(cell: Cell, tenant: str) -> str:
    r = httpx.post(cell.admin.url + "/keys", json={"tenant": tenant, "role": "user"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()["key"]


def client(cell: Cell, tenant: str = "team-a") -> openai.OpenAI:
    return openai.OpenAI(api_key=cell.keys[tenant], base_url=cell.gateway.url + "/v1",
                         max_retries=0, timeout=60)


def request_line(i: int, max_tokens: int = 4, **extra) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "smollm2", "max_tokens": max_tokens, **extra,
                     "messages": [{"role": "user", "content": f"Count to {i % 7 + 1}."}]}}


def jsonl(lines: list) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(c: openai.OpenAI, lines: list, name: str = "input.jsonl") -> str:
    return c.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch").id


def wait_for(c: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = c.batches.retrieve(batch_id)
        except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError):
            time.sleep(0.5)  # the admin may be restarting
            continue
        if b.status in statuses:
            return b
        time.sleep(0.3)
    raise TimeoutError(f"{batch_id} did not reach {statuses}")


def read_jsonl(c: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(x) for x in c.files.content(file_id).text.splitlines() if x]


@pytest.mark.slow
def test_a_batch_runs_to_completed_with_every_custom_id_once_and_its_errors_by_line(cell):
    c = client(cell)
    lines = [request_line(i) for i in range(20)]
    lines.insert(3, "{not json")
    lines.insert(7, {"method": "POST", "url": "/v1/chat/completions", "body": {}})
    lines.insert(11, request_line(99, max_tokens=-1))
    file_id = upload(c, lines)
    batch = c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h", metadata={"job": "nightly"})
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    done = wait_for(c, batch.id, ("completed", "failed"))
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (23, 20, 3)
    assert done.in_progress_at and done.completed_at >= done.in_progress_at
    out = read_jsonl(c, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(20))
    for x in out:
        assert x["response"]["status_code"] == 200 and x["error"] is None
        assert x["response"]["body"]["choices"][0]["message"]["content"]
        assert x["response"]["body"]["usage"]["completion_tokens"] > 0
    errors = read_jsonl(c, done.error_file_id)
    assert [e["error"]["line"] for e in errors] == [4, 8, 12]
    assert errors[0]["error"]["code"] == "invalid_json"
    assert "custom_id" in errors[1]["error"]["message"]
    assert errors[2]["custom_id"] == "req-99" and "max_tokens" in errors[2]["error"]["message"]
    assert c.files.retrieve(done.output_file_id).purpose == "batch_output"

    # listing: newest first, pages of one; another tenant sees none of it
    second = c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    page = c.batches.list(limit=1)
    assert [b.id for b in page.data] == [second.id] and page.has_more
    ids = [b.id for b in c.batches.list(limit=1)]  # the client follows `after`
    assert ids[:2] == [second.id, batch.id]
    assert file_id in [f.id for f in c.files.list()]
    other = client(cell, "team-b")
    assert [b.id for b in other.batches.list()] == []
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    wait_for(c, second.id, ("completed",))
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(second.id)
    assert c.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(file_id)


@pytest.mark.slow
def test_a_batch_cancelled_mid_run_keeps_what_was_answered(cell):
    c = client(cell)
    file_id = upload(c, [request_line(i, max_tokens=48, ignore_eos=True) for i in range(80)])
    batch = c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    deadline = time.monotonic() + 120
    while c.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert c.batches.cancel(batch.id).status == "cancelling"
    done = wait_for(c, batch.id, ("cancelled",))
    assert 3 <= done.request_counts.completed < 80 and done.cancelled_at
    out = read_jsonl(c, done.output_file_id)
    assert len(out) == done.request_counts.completed
    assert len({x["custom_id"] for x in out}) == len(out)


@pytest.mark.slow
def test_bad_input_is_refused_naming_what_is_wrong(cell):
    c = client(cell)
    good = upload(c, [request_line(1)])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        c.batches.create(input_file_id=good, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        c.batches.create(input_file_id=good, endpoint="/v1/chat/completions",
                         completion_window="1h")
    unknown = upload(c, [request_line(1) | {"body": {**request_line(1)["body"],
                                                     "model": "no-such-model"}}])
    with pytest.raises(openai.BadRequestError, match="no-such-model"):
        c.batches.create(input_file_id=unknown, endpoint="/v1/chat/completions",
                         completion_window="24h")
    twice = upload(c, [request_line(1), request_line(2), request_line(1)])
    with pytest.raises(openai.BadRequestError, match="req-1.*lines 1 and 3"):
        c.batches.create(input_file_id=twice, endpoint="/v1/chat/completions",
                         completion_window="24h")
    empty = upload(c, [])
    with pytest.raises(openai.BadRequestError, match="no requests"):
        c.batches.create(input_file_id=empty, endpoint="/v1/chat/completions",
                         completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client(cell, "team-b").batches.create(input_file_id=good,
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError) as e:  # over the admin's --max-file-bytes 1MiB
        c.files.create(file=("big.jsonl", io.BytesIO(b"x" * (2 << 20))), purpose="batch")
    assert e.value.status_code == 413 and "limit" in e.value.message

    # A 2 GB upload: refused from its Content-Length, before the body is sent.
    with socket.create_connection(("127.0.0.1", cell.gateway.port), timeout=10) as s:
        s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + cell.keys["team-a"].encode() + b"\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nContent-Length: 2147483648\r\n\r\n--b\r\n")
        head = s.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]


@pytest.mark.slow
def test_llmcell_batch_run_and_the_python_api_give_results_in_input_order(cell, tmp_path):
    bodies = [{"messages": [{"role": "user", "content": f"Say {w}."}], "max_tokens": 3}
              for w in ("yes", "no", "maybe")]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, LLMCELL_API_KEY=cell.keys["team-a"])
    done = subprocess.run([sys.executable, "-m", "llmcell.cli", "batch", "--gateway",
                           cell.gateway.url, "run", str(source), "--model", "smollm2", "-o",
                           str(out), "--poll", "0.3"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr and "completed" in done.stderr  # the progress bar
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ["request-1", "request-2", "request-3"]
    assert all(r["response"]["body"]["choices"][0]["message"]["content"] for r in results)

    # Parquet in (a column per body field), Parquet out
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(bodies), table)
    done = subprocess.run([sys.executable, "-m", "llmcell.cli", "batch", "--gateway",
                           cell.gateway.url, "run", str(table), "--model", "smollm2", "-o",
                           str(tmp_path / "out.parquet"), "--poll", "0.3"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["custom_id"] for r in rows] == ["request-1", "request-2", "request-3"]
    assert all(r["status_code"] == 200 and r["text"] and r["total_tokens"] for r in rows)

    api = BatchClient(cell.gateway.url, cell.keys["team-a"])
    got = list(api.run(({"prompt": f"{n} plus {n} is", "max_tokens": 2} for n in range(5)),
                       endpoint="/v1/completions", model="smollm2", poll=0.3))
    api.close()
    assert [r["custom_id"] for r in got] == [f"request-{n}" for n in range(1, 6)]
    assert all(r["response"]["body"]["choices"][0]["text"] for r in got)


@pytest.mark.slow
def test_kill_9_of_the_runner_and_of_a_server_loses_and_repeats_nothing(cell):
    c = client(cell)
    n = 300
    file_id = upload(c, [request_line(i, max_tokens=2) for i in range(n)])
    batch = c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    rng = random.Random(7)
    moments = sorted(rng.sample(range(20, n - 20), 4))
    for what, moment in zip(["admin", "admin", "server", "admin"], moments):
        deadline, completed = time.monotonic() + 240, 0
        while time.monotonic() < deadline and completed < moment:
            try:
                completed = c.batches.retrieve(batch.id).request_counts.completed
            except openai.APIError:
                pass  # the admin is coming back
            time.sleep(rng.random() * 0.2)
        assert completed < n, "the batch ended before the kills"
        print(f"kill -9 {what} at {completed} of {n}")
        if what == "admin":
            cell.admin.kill9()
            time.sleep(rng.random())
            cell.admin.start()
            cell.admin.wait()
        else:
            cell.servers[1].kill9()
    done = wait_for(c, batch.id, ("completed", "failed"), timeout=600)
    assert done.status == "completed", done
    out = read_jsonl(c, done.output_file_id)
    ids = [x["custom_id"] for x in out]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(n)), "every custom_id exactly once"
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (n, n, 0)
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert done.error_file_id is None
