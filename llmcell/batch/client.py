"""A batch from a data pipeline: an iterable of requests in, their results out, through a cell's
gateway and its Batch API (what `llmcell batch run` uses).

    from llmcell.batch.client import BatchClient
    client = BatchClient("http://127.0.0.1:8888", api_key)
    for result in client.run({"messages": [...], "max_tokens": 64} for row in rows):
        ...  # in input order: {"custom_id", "response": {...} or None, "error": ... or None}

A request is a request body (chat or completions), or a whole batch line with `custom_id` and
`body`. The batch's id is kept in `state` (a file) when one is given, so running the same thing
again after an interruption picks up the same batch instead of starting another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import httpx

FINAL = ("completed", "failed", "expired", "cancelled")


def batch_lines(requests: Iterable[dict], endpoint: str, model: str | None) -> Iterator[dict]:
    for n, item in enumerate(requests, 1):
        if not isinstance(item, dict):
            raise ValueError(f"request {n} is not an object: {item!r:.80}")
        line = dict(item) if "body" in item else {"body": dict(item)}
        line.setdefault("custom_id", f"request-{n}")
        line.setdefault("method", "POST")
        line.setdefault("url", endpoint)
        if model is not None:
            line["body"].setdefault("model", model)
        yield line


class BatchClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                 timeout=timeout, transport=transport)

    def _json(self, r: httpx.Response) -> dict:
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:500]
            raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} "
                               f"{message}")
        return r.json()

    def submit(self, requests: Iterable[dict], endpoint: str = "/v1/chat/completions",
               model: str | None = None, metadata: dict | None = None) -> dict:
        data = "".join(json.dumps(line) + "\n" for line in batch_lines(requests, endpoint, model))
        f = self._json(self.http.post("/v1/files", data={"purpose": "batch"},
                                      files={"file": ("input.jsonl", data.encode())}))
        return self._json(self.http.post("/v1/batches", json={
            "input_file_id": f["id"], "endpoint": endpoint, "completion_window": "24h",
            **({"metadata": metadata} if metadata else {})}))

    def status(self, batch_id: str) -> dict:
        return self._json(self.http.get(f"/v1/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> dict:
        return self._json(self.http.post(f"/v1/batches/{batch_id}/cancel"))

    def wait(self, batch_id: str, progress: Callable[[dict], None] = lambda b: None,
             poll: float = 1.0) -> dict:
        while True:
            b = self.status(batch_id)
            progress(b)
            if b["status"] in FINAL:
                return b
            time.sleep(poll)

    def results(self, batch: dict) -> list[dict]:
        """Output and error lines, in input order (by the lines' ids)."""
        out = []
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                r = self.http.get(f"/v1/files/{batch[key]}/content")
                if r.status_code != 200:
                    self._json(r)
                out += [json.loads(x) for x in r.text.splitlines() if x]
        return sorted(out, key=lambda x: int(x["id"].rsplit("_", 1)[1]))

    def run(self, requests: Iterable[dict], endpoint: str = "/v1/chat/completions",
            model: str | None = None, state: Path | None = None,
            progress: Callable[[dict], None] = lambda b: None, poll: float = 1.0
            ) -> Iterator[dict]:
        batch_id = None
        if state is not None and state.is_file():
            batch_id = json.loads(state.read_text()).get("batch_id")
            if batch_id and self.status(batch_id)["status"] in ("failed", "cancelled"):
                batch_id = None  # nothing to resume: submit again
        if batch_id is None:
            batch_id = self.submit(requests, endpoint, model)["id"]
            if state is not None:
                state.write_text(json.dumps({"batch_id": batch_id}))
        done = self.wait(batch_id, progress, poll)
        if done["status"] == "failed":
            raise RuntimeError(f"batch {batch_id} failed: {done.get('errors')}")
        yield from self.results(done)

    def close(self) -> None:
        self.http.close()


def progress_bar(out) -> Callable[[dict], None]:
    """A one-line progress bar on `out` (a terminal's stderr)."""
    def show(b: dict) -> None:
        counts = b["request_counts"]
        total = counts["total"] or 1
        done = counts["completed"] + counts["failed"]
        bar = "#" * int(30 * done / total)
        out.write(f"\r{b['id']} {b['status']:<11} [{bar:<30}] {done}/{counts['total']} "
                  f"({counts['failed']} failed)")
        if b["status"] in FINAL:
            out.write("\n")
        out.flush()
    return show
