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

from llmcell.bench.datasets import BenchRequest, Conversation


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
    text: str = ""
    """The answer's content (a conversation's next turn carries it)."""

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
                content = "".join((c.get("delta") or {}).get("content") or ""
                                  for c in chunk.get("choices", []))
                if content:
                    result.text += content
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


def _chat_endpoint(url: str) -> str:
    base = url.rstrip("/")
    return base + ("" if base.endswith("/v1") else "/v1") + "/chat/completions"


async def run_load(url: str, model: str, requests: list[BenchRequest], concurrency: int | None,
                   rate: float | None, seed: int = 0, api_key: str | None = None,
                   timeout: float = 600.0,
                   on_done: Callable[[RequestResult], None] = lambda r: None
                   ) -> tuple[list[RequestResult], float]:
    """All results (in send order) and the run's duration in seconds."""
    endpoint = _chat_endpoint(url)
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


async def run_conversations(url: str, model: str, conversations: list[Conversation],
                            concurrency: int, timeout: float = 600.0,
                            on_done: Callable[[RequestResult], None] = lambda r: None
                            ) -> tuple[list[RequestResult], float]:
    """Up to `concurrency` conversations at once, each one's turns in order, every turn carrying
    the system prompt, the questions and the answers so far; a failed turn ends its
    conversation. Every turn's result (`prefix_id`: the tenant), and the run's duration."""
    endpoint = _chat_endpoint(url)
    gate = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                                 limits=httpx.Limits(max_connections=concurrency + 8)) as client:
        async def talk(conv: Conversation) -> list[RequestResult]:
            messages, results = [{"role": "system", "content": conv.system}], []
            async with gate:
                for question in conv.questions:
                    messages.append({"role": "user", "content": question})
                    r = await _one(client, endpoint, model, BenchRequest(
                        list(messages), conv.max_tokens, prefix_id=conv.tenant), t0, {})
                    on_done(r)
                    results.append(r)
                    if not r.ok:
                        break
                    messages.append({"role": "assistant", "content": r.text})
            return results

        done = await asyncio.gather(*(talk(c) for c in conversations))
    return [r for turns in done for r in turns], time.monotonic() - t0
