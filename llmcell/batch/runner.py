"""The batch runner: it takes each active batch through `validating -> in_progress ->
finalizing -> completed` (or `cancelling -> cancelled`, `expired`), sending its lines through a
gateway of the cell, so they are routed, admitted and fail over as online requests are, at the
`batch` priority: online requests go first at the gateway's queue and in the engines.

- **In flight:** as many requests as the cell has slots for (`concurrency()`), so a batch fills
  what online traffic leaves and uses the whole cell when there is none.
- **Exactly once:** a line counts once its result row is committed (batch/store.py). A restart
  (the runner was killed at any moment) skips the lines with a row and sends the others again.
- **Retries:** a 429, a 502-504 or a connection error means the cell is busy or away: the line
  is sent again after a pause, as long as the batch is active. A 500 is tried `MAX_500` times.
  Any other answer is the line's result (a 4xx goes to the error file).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import httpx

from llmcell.batch.blobs import Blobs
from llmcell.batch.store import BatchStore
from llmcell.protocol.batch import (COMPLETION_WINDOWS, BatchLine, BatchObject, FileObject,
                                    LineError, error_line, output_line, parse_line, request_id)
from llmcell.protocol.tenancy import PRIORITY_HEADER

log = logging.getLogger("llmcell.batch")
TRANSIENT = frozenset({429, 502, 503, 504})
MAX_500 = 5
MAX_PAUSE = 10.0


def read_lines(blobs: Blobs, file_id: str, endpoint: str) -> list[BatchLine | LineError]:
    """Every non-empty line of an input file, parsed (blocking: call it in a thread)."""
    out = []
    for number, raw in enumerate(blobs.lines(file_id), 1):
        if raw.strip():
            out.append(parse_line(raw, number, endpoint))
    return out


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """The output and error files' ids: the same after a restart, so finalizing twice writes
    the same files."""
    tag = batch_id.removeprefix("batch_")
    return f"file-{tag}-output", f"file-{tag}-errors"


class BatchRunner:
    def __init__(self, store: BatchStore, blobs: Blobs, gateway: httpx.AsyncClient,
                 concurrency: Callable[[], int], poll: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.blobs = blobs
        self.gateway = gateway
        self.concurrency = concurrency
        self.poll = poll
        self.clock = clock

    async def run(self) -> None:
        """Work on the active batches, oldest first, until cancelled."""
        while True:
            try:
                active = self.store.active()
                for b in active:
                    await self.step(b)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad batch must not stop the others; it is tried again
                log.exception("batch runner step failed")
                active = []
            if not active:
                await asyncio.sleep(self.poll)

    async def step(self, b: BatchObject) -> None:
        if b.status in ("validating", "in_progress") and self.clock() >= b.expires_at:
            await self.finalize(b, "expired")
        elif b.status == "validating":
            await self.validate(b)
        elif b.status == "in_progress":
            if await self.work(b):
                self.store.move(b, "finalizing", self.clock())
        elif b.status == "cancelling":
            await self.finalize(b, "cancelled")
        elif b.status == "finalizing":
            await self.finalize(b, "completed")

    async def validate(self, b: BatchObject) -> None:
        """Per-line errors go to the error file now; the rest of the batch goes on."""
        try:
            lines = await asyncio.to_thread(read_lines, self.blobs, b.input_file_id, b.endpoint)
        except FileNotFoundError:
            b.errors = [{"code": "file_not_found", "message": f"the input file "
                         f"{b.input_file_id} is gone", "param": "input_file_id", "line": None}]
            self.store.move(b, "failed", self.clock())
            return
        for item in lines:
            if isinstance(item, LineError):
                self.store.add_result(b.id, item.line, item.custom_id, False,
                                      error_line(b.id, item))
        b.total = len(lines)
        self.store.move(b, "in_progress", self.clock())

    async def work(self, b: BatchObject) -> bool:
        """Send every line without a result; True once all have one, False when the batch left
        `in_progress` (cancelled, expired) meanwhile."""
        lines = await asyncio.to_thread(read_lines, self.blobs, b.input_file_id, b.endpoint)
        done = self.store.done_lines(b.id)
        todo = [x for x in lines if isinstance(x, BatchLine) and x.line not in done]
        log.info("batch %s: %d of %d requests to send", b.id, len(todo), b.total)
        running: set[asyncio.Task] = set()
        stopped = False
        try:
            for line in todo:
                while len(running) >= max(1, self.concurrency()):
                    finished, _ = await asyncio.wait(running, timeout=self.poll,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    running -= finished
                    if self._stopped(b):
                        stopped = True
                        break
                if stopped or self._stopped(b):
                    stopped = True
                    break
                running.add(asyncio.create_task(self.send(b, line)))
            while running and not stopped:
                finished, running = await asyncio.wait(running, timeout=self.poll)
                stopped = self._stopped(b)
        finally:
            for task in running:
                task.cancel()
        if stopped:
            return False
        done = self.store.done_lines(b.id)  # a send that raised left its line to the next pass
        return all(x.line in done for x in lines)

    def _stopped(self, b: BatchObject) -> bool:
        """Cancelled by its owner, or past its window."""
        now = self.store.batch(b.id)
        return now is None or now.status != "in_progress" or self.clock() >= b.expires_at

    async def send(self, b: BatchObject, line: BatchLine) -> None:
        rid = request_id(b.id, line.line)
        pause, errors = 0.5, 0
        while True:
            try:
                r = await self.gateway.post(b.endpoint, json=line.body, headers={
                    PRIORITY_HEADER: "batch", "X-Request-Id": rid})
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 500:
                errors += 1
            if r is None or r.status_code in TRANSIENT or (r.status_code == 500
                                                           and errors < MAX_500):
                wait = pause
                if r is not None and r.headers.get("retry-after", "").isdigit():
                    wait = max(wait, float(r.headers["retry-after"]))
                await asyncio.sleep(min(wait, MAX_PAUSE))
                pause = min(pause * 2, MAX_PAUSE)
                continue
            try:
                body = r.json()
            except ValueError:
                body = {"error": {"message": r.text[:1000], "type": "server_error"}}
            ok = r.status_code == 200
            tokens = (body.get("usage") or {}).get("total_tokens", 0) if ok else 0
            self.store.add_result(b.id, line.line, line.custom_id, ok,
                                  output_line(b.id, line.line, line.custom_id, r.status_code,
                                              body), tokens)
            return

    async def finalize(self, b: BatchObject, status: str) -> None:
        """Write the output and error files from the committed results, then the final status
        (a crash in between writes the same files again)."""
        output, errors = output_file_ids(b.id)
        b = self.store.batch(b.id) or b
        now = int(self.clock())
        for file_id, ok, count in ((output, True, b.completed), (errors, False, b.failed)):
            if not count:
                continue
            size = await asyncio.to_thread(self.blobs.put, file_id, (
                (record + "\n").encode() for record in list(self.store.results(b.id, ok))))
            self.store.add_file(FileObject(file_id, b.tenant, f"{b.id}_{'output' if ok else 'error'}"
                                           ".jsonl", "batch_output", size, now, count))
        b.output_file_id = output if b.completed else None
        b.error_file_id = errors if b.failed else None
        self.store.move(b, status, self.clock())
        log.info("batch %s %s: %d completed, %d failed of %d", b.id, status, b.completed,
                 b.failed, b.total)


def expires_at(created_at: int, window: str) -> int:
    return created_at + COMPLETION_WINDOWS[window]

