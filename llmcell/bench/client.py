"""Send a workload and time every request: streaming chat completions over plain HTTP.

Each request records its start, the arrival of every content chunk (time to first token,
inter-token gaps), its end, the token counts the server reports (`stream_options.include_usage`)
and any error. Load is a fixed number of requests in flight (`concurrency`) or a Poisson arrival
process (`rate` requests/s). Timestamps are monotonic seconds from the start of the run.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from llmcell.bench.datasets import BenchRequest


@dataclass
class RequestResult:
    start: float
    end: float = 0.0
    ttft: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    prefix_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]


async def _one(client: httpx.AsyncClient, url: str, model: str, req: BenchRequest, t0: float,
               headers: dict) -> RequestResult:
    result = RequestResult(time.monotonic() - t0, prefix_id=req.prefix_id)
    body = {"model": model, "messages": req.messages, "max_tokens": req.max_tokens,
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                result.error = f"HTTP {resp.status_code}: {text[:200]}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = f"stream error: {chunk['error'].get('message')}"
                    break
                now = time.monotonic() - t0
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    if result.ttft is None:
                        result.ttft = now - result.start
                    result.chunk_times.append(now)
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    result.output_tokens = chunk["usage"]["completion_tokens"]
    except (httpx.HTTPError, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.end = time.monotonic() - t0
    if result.ok and not result.output_tokens:
        result.output_tokens = len(result.chunk_times)
    return result


async def run_load(url: str, model: str, requests: list[BenchRequest], concurrency: int | None,
                   rate: float | None, seed: int = 0, api_key: str | None = None,
                   timeout: float = 600.0,
                   on_done: Callable[[RequestResult], None] = lambda r: None
                   ) -> tuple[list[RequestResult], float]:
    """All results (in send order) and the run's duration in seconds."""
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1")
    endpoint += "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max(concurrency or 0, 256))
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                                 limits=limits) as client:
        async def send(req: BenchRequest) -> RequestResult:
            r = await _one(client, endpoint, model, req, t0, headers)
            on_done(r)
            return r

        if rate is None:
            gate = asyncio.Semaphore(concurrency or 1)

            async def gated(req: BenchRequest) -> RequestResult:
                async with gate:
                    return await send(req)

            results = await asyncio.gather(*(gated(r) for r in requests))
        else:
            rng = random.Random(seed)
            tasks = []
            for req in requests:
                tasks.append(asyncio.create_task(send(req)))
                await asyncio.sleep(rng.expovariate(rate))
            results = await asyncio.gather(*tasks)
    return list(results), time.monotonic() - t0
