"""HTTP overhead of the model server: 32 concurrent streaming chats through HTTP versus the same
workload submitted directly to the engine, in one run.

Both paths stay up for the whole run (the engine in this process, `llmcell server` as a separate
process on loopback) and take turns, round after round, never both at once: each round runs the
32-request burst and then ISOLATED requests one at a time on the engine, then the same on the
server. The direct path is what an in-process chat client does (chat template, tokenization,
`AsyncEngine.generate`), so the difference is HTTP: the socket, parsing and validation, the
response and SSE encoding, the event loop's hand-offs.

Time to first token (TTFT) is compared *paired*: for every request, the client's TTFT is set
against the engine's own TTFT for that same request (stamped from submission to the first sampled
token; read from `llmcell:time_to_first_token_seconds` on the server, from the outputs directly).
Their difference is what lies outside the engine on each path, and HTTP's minus the direct path's
is what HTTP adds. This cancels the engine's own time, which on this machine drifts by 10-20%
between turns, far more than the milliseconds measured. The plain A/B difference of p50 TTFTs is
printed too, with that caveat.

The HTTP client is `llmcell.bench.wire` (pre-encoded requests on kept-alive sockets) so that the
client's own cost, which shares these 2 cores, is not counted as the server's; one more round with
httpx (what the openai client uses) shows what a general client adds on top.

Targets: the HTTP path keeps >= 90% of the engine's tokens/s and adds <= 2 ms to TTFT.

    .venv/bin/python bench/server_overhead.py [--requests 32] [--max-tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from llmcell.bench.wire import SSEConnection  # noqa: E402
from llmcell.config import EngineConfig  # noqa: E402
from llmcell.engine import AsyncEngine, SamplingParams  # noqa: E402
from llmcell.engine.core import EngineCore  # noqa: E402
from llmcell.engine.loader.chat_template import render_chat  # noqa: E402
from tests.server.conftest import MODEL, ServerProcess  # noqa: E402

ISOLATED = 20  # requests sent one at a time: the per-request cost without batching effects


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Request {i}: describe a city by a river in detail."}]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class DirectPath:
    """The engine in this process, driven as an in-process chat client drives it: messages are
    rendered with the chat template and tokenized (as vLLM's `LLM.chat` does), then submitted."""

    name = "engine"

    def __init__(self, n: int, max_tokens: int, threads: int) -> None:
        core = EngineCore(EngineConfig(threads=threads, kv_cache_memory=512 << 20))
        self.engine = AsyncEngine(core)
        self.tokenizer = core.tokenizer
        self.params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        self.count = 0
        self.engine_ttfts: list[float] = []

    async def one(self, i: int, start: float) -> tuple[float, int]:
        tk = self.tokenizer
        prompt = tk.encode(render_chat(tk.chat_template, messages(i), True, tk.bos_token,
                                       tk.eos_token), add_special_tokens=False)
        ttft, tokens = None, 0
        self.count += 1
        async for out in self.engine.generate(prompt, self.params, f"r{self.count}"):
            if ttft is None and out.outputs[0].delta_text:
                ttft = time.perf_counter() - start
                self.engine_ttfts.append(out.metrics.first_token - out.metrics.arrival)
            tokens = len(out.outputs[0].token_ids)
        return ttft, tokens

    def engine_ttft(self) -> tuple[float, float]:
        return sum(self.engine_ttfts), len(self.engine_ttfts)

    def close(self) -> None:
        self.engine.shutdown()


class HTTPPath:
    """The server over loopback, through `client`: "wire" or "httpx"."""

    def __init__(self, server: ServerProcess, n: int, max_tokens: int, client: str) -> None:
        self.server, self.client, self.name = server, client, f"http ({client})"
        self.bodies = [{"model": MODEL, "messages": messages(i), "max_tokens": max_tokens,
                        "temperature": 0, "ignore_eos": True, "stream": True,
                        "stream_options": {"include_usage": True}} for i in range(n)]
        self.conns = [SSEConnection("127.0.0.1", server.port) for _ in range(n)]
        self.wire = [SSEConnection.request_bytes("127.0.0.1", "/v1/chat/completions", b)
                     for b in self.bodies]
        self.http = httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n + 4))

    async def one(self, i: int, start: float) -> tuple[float, int]:
        ttft, tokens = None, 0

        def read(payload: bytes) -> None:
            nonlocal ttft, tokens
            chunk = json.loads(payload)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - start

        if self.client == "wire":
            async for payload in self.conns[i].events(self.wire[i]):
                if payload != b"[DONE]":
                    read(payload)
            return ttft, tokens
        url = self.server.url + "/v1/chat/completions"
        async with self.http.stream("POST", url, json=self.bodies[i]) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    read(line[6:].encode())
        return ttft, tokens

    def engine_ttft(self) -> tuple[float, float]:
        name = "llmcell:time_to_first_token_seconds"
        return self.server.metric(name + "_sum"), self.server.metric(name + "_count")

    async def close(self) -> None:
        for c in self.conns:
            c.close()
        await self.http.aclose()


async def measured(path, n: int) -> dict:
    """The burst, then ISOLATED requests one at a time, with the paired figures: the client's
    mean TTFT minus the engine's own mean TTFT over the same requests."""
    s0, c0 = path.engine_ttft()
    start = time.perf_counter()
    burst = await asyncio.gather(*[path.one(i, start) for i in range(n)])
    s1, c1 = path.engine_ttft()
    wall = time.perf_counter() - start
    isolated = [(await path.one(i % n, time.perf_counter()))[0] for i in range(ISOLATED)]
    s2, c2 = path.engine_ttft()
    if (c1 - c0, c2 - c1) != (n, ISOLATED):
        raise RuntimeError(f"server counted {c1 - c0}/{c2 - c1} first tokens for {n}/{ISOLATED}")
    ttfts = [r[0] for r in burst]
    return {"tokens_per_s": sum(r[1] for r in burst) / wall,
            "ttft_p50_ms": 1e3 * statistics.median(ttfts), "ttft_p95_ms": 1e3 * pct(ttfts, 0.95),
            "isolated_ttft_p50_ms": 1e3 * statistics.median(isolated),
            "paired_ms": 1e3 * (statistics.mean(ttfts) - (s1 - s0) / n),
            "isolated_paired_ms": 1e3 * (statistics.mean(isolated) - (s2 - s1) / ISOLATED)}


async def run(args) -> dict:
    n = args.requests
    direct = DirectPath(n, args.max_tokens, args.threads)
    server = ServerProcess("--threads", str(args.threads), "--kv-cache-memory", "512MiB")
    wire = HTTPPath(server, n, args.max_tokens, "wire")
    httpx_path = HTTPPath(server, n, args.max_tokens, "httpx")
    rounds: list[dict] = []
    try:
        for path in (direct, wire, httpx_path):  # the same warm-up everywhere
            await asyncio.gather(*[path.one(i, time.perf_counter()) for i in range(n)])
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: engine, then HTTP...", file=sys.stderr,
                  flush=True)
            rounds.append({"engine": await measured(direct, n),
                           "http": await measured(wire, n)})
        print("one round through httpx...", file=sys.stderr, flush=True)
        extra = {"engine": await measured(direct, n),
                 "http": await measured(httpx_path, n)}
    finally:
        direct.close()
        await wire.close()
        await httpx_path.close()
        server.stop()
    return {"rounds": rounds, "httpx_round": extra}


def diff(rounds: list[dict], key: str) -> float:
    return statistics.median(r["http"][key] - r["engine"][key] for r in rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sys.setswitchinterval(0.0005)  # as `llmcell server` runs (see llmcell/server/main.py)
    result = asyncio.run(run(args))
    rounds = result["rounds"]
    print(f"{'round':<7} {'path':<8} {'tok/s':>7} {'TTFT p50':>9} {'p95':>8} "
          f"{'1-at-a-time p50':>16} {'paired':>17}   (ms)")
    for i, r in enumerate(rounds + [result["httpx_round"]]):
        label = str(i + 1) if i < len(rounds) else "httpx"
        for side in ("engine", "http"):
            x = r[side]
            pair = f"{x['paired_ms']:+.2f} / {x['isolated_paired_ms']:+.2f}"
            print(f"{label:<7} {side:<8} {x['tokens_per_s']:>7.1f} {x['ttft_p50_ms']:>9.1f} "
                  f"{x['ttft_p95_ms']:>8.1f} {x['isolated_ttft_p50_ms']:>16.1f} {pair:>17}")
    ratio = statistics.median(r["http"]["tokens_per_s"] / r["engine"]["tokens_per_s"]
                              for r in rounds)
    added = {key: diff(rounds, key) for key in ("paired_ms", "isolated_paired_ms",
                                                 "ttft_p50_ms", "isolated_ttft_p50_ms")}
    summary = {"throughput_ratio": ratio, "ttft_added_isolated_ms": added["isolated_paired_ms"],
               "ttft_added_burst_ms": added["paired_ms"],
               "ab_ttft_p50_added_isolated_ms": added["isolated_ttft_p50_ms"],
               "ab_ttft_p50_added_burst_ms": added["ttft_p50_ms"]}
    print(f"medians over {len(rounds)} rounds of the per-round figures:")
    print(f"  HTTP keeps {ratio:.1%} of the engine's tokens/s (target >= 90%)")
    print(f"  TTFT added by HTTP (paired: HTTP's client-minus-engine TTFT less the direct path's):"
          f" {added['isolated_paired_ms']:+.2f} ms one request at a time (target <= 2 ms), "
          f"{added['paired_ms']:+.1f} ms mean in the {args.requests}-request burst")
    print(f"  A/B p50 TTFT difference (moves with the machine's drift between turns): "
          f"{added['isolated_ttft_p50_ms']:+.1f} ms one at a time, {added['ttft_p50_ms']:+.1f} ms "
          f"in the burst")
    if args.json:
        args.json.write_text(json.dumps({**result, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
