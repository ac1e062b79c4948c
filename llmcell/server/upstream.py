"""External-engine backend: an OpenAI-compatible server (vLLM, vLLM on TPU, SGLang, llmcell)
behind llmcell's model-server contract.

Requests are validated here, then forwarded; streams pass through chunk by chunk as they arrive
(no buffering; SSE events are rewritten only when the served model name differs from the
upstream's). Load comes from the upstream's `/metrics` (vLLM's `vllm:*` names or llmcell's), polled
in the background; readiness follows the upstream's `/health`. An unreachable upstream is a 503
that says so.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from prometheus_client.parser import text_string_to_metric_families

from llmcell.config.server import ServerConfig
from llmcell.edge.relay import Relay, RelayBusy, RelayError, RelayResponse
from llmcell.protocol.errors import APIError
from llmcell.protocol.openai import CONTINUATION, ChatRequest, CompletionRequest
from llmcell.server.backend import Load, Reply
from llmcell.server.metrics import ServerMetrics

RUNNING = ("vllm:num_requests_running", "llmcell:num_requests_running",
           "sglang:num_running_reqs")
WAITING = ("vllm:num_requests_waiting", "llmcell:num_requests_waiting", "sglang:num_queue_reqs")
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llmcell:kv_cache_usage_perc",
            "sglang:token_usage")


def parse_load(text: str) -> tuple[float, float, float]:
    """(running, waiting, kv usage 0-1) from Prometheus text in vLLM's or llmcell's names."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in RUNNING + WAITING + KV_USAGE:
                found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)

    def first(names: tuple[str, ...]) -> float:
        return next((found[n] for n in names if n in found), 0.0)

    return first(RUNNING), first(WAITING), min(1.0, first(KV_USAGE))


class UpstreamBackend:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.base = config.upstream.rstrip("/")
        self.model_name = config.served_model_name or ""
        self.upstream_model = ""
        self.max_model_len = 0
        self._load = Load(0, 0, 0.0, False)
        self._in_flight = 0
        self._poller: asyncio.Task | None = None
        self.relay = Relay(limit=config.upstream_connections, connect_timeout=10.0)
        """No ceiling unless configured; beyond one, a request gets 429 at once."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def prefix_cache(self) -> None:
        return None  # an external engine's cache is its own: gateways route it by prefix hash

    # ---- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._collector = self.metrics.bind_load(self.load, lambda: self.model_name)
        await self._discover()
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        self.metrics.unbind(getattr(self, "_collector", None))
        if self._poller:
            self._poller.cancel()
        await self.relay.aclose()

    async def _discover(self) -> None:
        """Learn the upstream's model id (retrying quietly while it starts)."""
        while not self.upstream_model:
            try:
                r = await self.relay.request("GET", self.base + "/v1/models")
                status, cards = r.status, json.loads(await r.read()).get("data") or []
                if status == 200 and cards:
                    self.upstream_model = cards[0]["id"]
                    self.max_model_len = int(cards[0].get("max_model_len") or 0)
                    self.model_name = self.model_name or self.upstream_model
                    return
            except (RelayError, ValueError, KeyError, AttributeError):
                pass
            await asyncio.sleep(self.config.upstream_poll_interval)

    async def _poll(self) -> None:
        while True:
            try:
                health = await self.relay.request("GET", self.base + "/health")
                healthy = health.status == 200
                health.close()
                m = await self.relay.request("GET", self.base + "/metrics")
                text = (await m.read()).decode(errors="replace")
                running, waiting, kv = parse_load(text) if m.status == 200 else (0, 0, 0)
                self._load = Load(int(running), int(waiting), kv, healthy)
            except (RelayError, ValueError):
                self._load = Load(0, 0, 0.0, False)
            await asyncio.sleep(self.config.upstream_poll_interval)

    def load(self) -> Load:
        return self._load

    # ---- forwarding ------------------------------------------------------------------------------------
    def _unreachable(self, e: Exception) -> APIError:
        return APIError(503, f"the upstream engine at {self.base} is unreachable "
                             f"({type(e).__name__}: {e}); retry on another replica",
                        code="upstream_unavailable", headers={"Retry-After": "1"})

    async def _forward(self, path: str, raw: dict, stream: bool) -> Reply:
        if not self.upstream_model:
            raise APIError(503, f"the upstream engine at {self.base} has not answered yet",
                           headers={"Retry-After": "1"})
        if raw.get(CONTINUATION) is not None:
            raise APIError(400, "an external engine cannot continue an answer another replica "
                                "began", param=CONTINUATION, code="continuation_unsupported")
        body = dict(raw, model=self.upstream_model)
        body.pop("priority", None)  # vLLM refuses it unless started with priority scheduling
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self._in_flight += 1
        try:
            resp = await self.relay.post(self.base + path, data)
            if resp.status != 200 or not stream:
                answer = await resp.read()
        except RelayBusy as e:
            raise APIError(429, f"this server is at its upstream_connections ceiling ({e}); "
                                "retry shortly", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except RelayError as e:
            raise self._unreachable(e) from None
        finally:
            self._in_flight -= 1
        if resp.status != 200 or not stream:
            try:
                payload = json.loads(answer)
            except ValueError:
                raise APIError(502, f"the upstream engine answered {resp.status} with a "
                                    "non-JSON body") from None
            if resp.status == 200 and isinstance(payload, dict) and "model" in payload:
                payload["model"] = self.model_name
            return Reply(status=resp.status, body=payload)
        return Reply(stream=self._relay(resp))

    async def _relay(self, resp: RelayResponse) -> AsyncIterator[bytes]:
        self._in_flight += 1
        rename = self.model_name != self.upstream_model
        buf = b""
        try:
            async for chunk in resp.chunks():
                if not rename:
                    yield chunk
                    continue
                buf += chunk
                *events, buf = buf.split(b"\n\n")
                for ev in events:
                    yield self._rename(ev) + b"\n\n"
            if buf:
                yield buf
        except RelayError as e:
            err = self._unreachable(e).body()
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:
            self._in_flight -= 1
            resp.close()

    def _rename(self, ev: bytes) -> bytes:
        if not ev.startswith(b"data: {"):
            return ev
        try:
            payload = json.loads(ev[6:])
        except ValueError:
            return ev
        if "model" in payload:
            payload["model"] = self.model_name
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode()

    async def chat(self, req: ChatRequest, raw: dict) -> Reply:
        return await self._forward("/v1/chat/completions", raw, req.stream)

    async def complete(self, req: CompletionRequest, raw: dict) -> Reply:
        return await self._forward("/v1/completions", raw, req.stream)

    async def tokenize(self, raw: dict) -> Reply:
        return await self._forward("/tokenize", raw, False)

    async def detokenize(self, raw: dict) -> Reply:
        return await self._forward("/detokenize", raw, False)
