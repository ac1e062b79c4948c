"""HTTP overhead of the model server: 32 concurrent streaming chats through HTTP versus the same
workload submitted directly to the engine, in one run.

Both paths stay up for the whole run and take turns, round after round, never both at once:
- the direct path: the engine as `llmcell server` runs it (its core in a process of its own,
  `ProcessEngine`), driven from this process as an in-process chat client drives it (chat template,
  tokenization, `generate`);
- the HTTP path: `llmcell server` as a separate process on loopback.
The difference is HTTP: the sockets, parsing and validation, the response and SSE encoding, the
event loop's hand-offs, the client's own reading.

Each round runs three workloads on each path (the paths swap turns every round):
- burst: 32 requests sent at the same instant to an idle engine (also gives tokens/s);
- concurrent: 32 clients each sending requests back to back (vLLM's `--max-concurrency 32`),
  three each, with lengths drawn at random (seeded) so that they finish together only by
  chance; the figures are taken after each client's first request, in the steady state;
- isolated: requests one at a time.

Time to first token (TTFT) is compared *paired*: for every request, the client's TTFT less the
engine's own TTFT for that same request (the engine's `first_token_ms`, from the outputs on the
direct path and from the `timings` of the usage chunk over HTTP) is what lay outside the engine;
the p50 of that over HTTP, less the same over the direct path, is what HTTP adds. This cancels the
engine's own time, which on this machine drifts by 10-20% between turns, far more than the
milliseconds measured. The plain A/B difference of p50 TTFTs is printed too, with that caveat.

For the burst the bench also prints where its time outside the engine goes (`burst_pace`): how
often each path hands the engine a request and a client its first token. One event loop takes a
burst's requests in one after another and writes their first tokens one after another, so the
burst's p50 request waits behind half the burst on both counts; half the burst times the
per-request difference is the part of the burst's figure that comes from serial work.

The HTTP client is `llmcell.bench.wire` (pre-encoded requests on kept-alive sockets) so that the
client's own cost, which shares these 2 cores, is not counted as the server's; `--httpx` adds a
round through httpx (what the openai client uses) to show what a general client adds.

Targets: the HTTP path keeps >= 90% of the engine's tokens/s and adds <= 2 ms to TTFT.

    .venv/bin/python bench/server_overhead.py [--requests 32] [--max-tokens 64] [--rounds 2]
        [--workloads burst,concurrent,isolated] [--per-client 3] [--httpx] [--json FILE]
        [--plot PNG]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.overhead_figures import Sample, burst_pace, missed_step, pct, plot  # noqa: E402
from llmcell.bench.wire import SSEConnection  # noqa: E402
from llmcell.config import EngineConfig  # noqa: E402
from llmcell.engine import SamplingParams  # noqa: E402
from llmcell.tokenizer.chat_template import render_chat  # noqa: E402
from llmcell.engine.process import ProcessEngine  # noqa: E402
from llmcell.server.main import event_loop_factory  # noqa: E402
from tests.server.conftest import MODEL, ServerProcess  # noqa: E402

ISOLATED = 20  # requests sent one at a time: the per-request cost without batching effects
ISOLATED_TOKENS = 16
PER_CLIENT = 3  # requests each concurrent client sends back to back (--per-client)
NICE, IDLE = 5, True  # the server's default engine priority, used for the direct path's too


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Request {i}: describe a city by a river in detail."}]


class DirectPath:
    """The engine as the server runs it, driven as an in-process chat client drives it: messages
    are rendered with the chat template and tokenized (as vLLM's `LLM.chat` does), then
    submitted."""

    name = "engine"

    def __init__(self, engine: ProcessEngine) -> None:
        self.engine = engine
        self.count = 0

    @classmethod
    async def start(cls, threads: int) -> "DirectPath":
        config = EngineConfig(threads=threads, kv_cache_memory=512 << 20)
        return cls(await ProcessEngine.start(config, NICE, IDLE))

    async def one(self, i: int, start: float | None, max_tokens: int,
                  conn: int | None = None) -> Sample:
        start = time.perf_counter() if start is None else start
        tk = self.engine.tokenizer
        prompt = tk.encode(render_chat(tk.chat_template, messages(i), True, tk.bos_token,
                                       tk.eos_token), add_special_tokens=False)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        ttft, engine_ttft, tokens, m = None, None, 0, None
        self.count += 1
        async for out in self.engine.generate(prompt, params, f"r{self.count}"):
            if ttft is None and out.outputs[0].delta_text:
                ttft = time.perf_counter() - start
                m = out.metrics
                engine_ttft = m.first_token - m.arrival
            tokens = len(out.outputs[0].token_ids)
        return Sample(ttft, ttft - engine_ttft, tokens, m.first_scheduled - m.arrival,
                      m.first_token - m.first_scheduled)

    async def prepare(self) -> None:
        """Nothing to set up before a workload (see `HTTPPath.prepare`)."""

    async def close(self) -> None:
        await self.engine.aclose()


class HTTPPath:
    """The server over loopback, through `client`: "wire" or "httpx"."""

    def __init__(self, server: ServerProcess, n: int, client: str) -> None:
        self.server, self.client, self.name = server, client, f"http ({client})"
        self.conns = [SSEConnection("127.0.0.1", server.port) for _ in range(n)]
        self.http = httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n + 4))

    @staticmethod
    def body(i: int, max_tokens: int) -> dict:
        return {"model": MODEL, "messages": messages(i), "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}

    async def one(self, i: int, start: float | None, max_tokens: int,
                  conn: int | None = None) -> Sample:
        """Request `i` on connection `conn` (default i mod n), timed from `start` (default: once
        the request is encoded)."""
        body = self.body(i, max_tokens)
        wire = SSEConnection.request_bytes("127.0.0.1", "/v1/chat/completions", body)
        start = time.perf_counter() if start is None else start
        ttft, engine_ttft, tokens, queued = None, None, 0, 0.0

        def read(payload: bytes) -> None:
            nonlocal ttft, engine_ttft, tokens, queued
            if ttft is None and b'"content":"' in payload and b'"content":""' not in payload:
                ttft = time.perf_counter() - start
            elif payload.startswith(b'{"id') and b'"usage":{' in payload:
                chunk = json.loads(payload)
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                    engine_ttft = chunk["timings"]["first_token_ms"] / 1e3
                    queued = chunk["timings"]["queued_ms"] / 1e3

        if self.client == "wire":
            connection = self.conns[i % len(self.conns) if conn is None else conn]
            async for payload in connection.events(wire):
                if payload != b"[DONE]":
                    read(payload)
        else:
            url = self.server.url + "/v1/chat/completions"
            async with self.http.stream("POST", url, json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        read(line[6:].encode())
        return Sample(ttft, ttft - engine_ttft, tokens, queued, engine_ttft - queued)

    async def prepare(self) -> None:
        """Open every connection afresh before a workload, outside the clock. The server closes a
        connection idle for 5 s (uvicorn's keep-alive), which the connections here often are
        between workloads; a burst would then open most of them while the rest are already
        sending, and the first request, alone on a warm connection, would reach the idle engine
        ~15 ms before the others (the client opening 31 connections first) and take a step of
        its own. A model server's callers (the gateway's pool) keep their connections open, so
        the figures are for requests on open connections."""
        for c in self.conns:
            c.close()
        await asyncio.gather(*[c.open() for c in self.conns])
        await asyncio.sleep(0.05)  # the server accepts them

    async def close(self) -> None:
        for c in self.conns:
            c.close()
        await self.http.aclose()


def lengths(i: int, max_tokens: int) -> int:
    """Request `i`'s length for the concurrent clients: drawn from [max_tokens/2, 3*max_tokens/2)
    with `i` as the seed (vLLM's random dataset with `--random-range-ratio 0.5`), the same on both
    paths. Independent draws: clients finish together only by chance, as with real traffic. (A
    cycle of eight lengths, used before, kept clients c, c+8, c+16 and c+24 in lockstep for the
    whole run, so every step's finishers sent their next requests as bursts of four.)"""
    lo = max(8, max_tokens // 2)
    return random.Random(i).randrange(lo, lo + max(1, max_tokens))


async def measured(path, n: int, max_tokens: int, workloads: tuple[str, ...],
                   per_client: int) -> dict:
    """The burst, the concurrent clients, then requests one at a time (those of `workloads`), on
    one path. A workload left out has NaN figures."""
    ms = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    nan = float("nan")
    result = dict.fromkeys(("tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "outside_ms",
                            "concurrent_tokens_per_s", "concurrent_ttft_p50_ms",
                            "concurrent_outside_ms", "concurrent_missed_step",
                            "isolated_ttft_p50_ms",
                            "isolated_outside_ms"), nan)
    if "burst" in workloads:
        await path.prepare()
        start = time.perf_counter()
        burst = await asyncio.gather(*[path.one(i, start, max_tokens) for i in range(n)])
        wall = time.perf_counter() - start
        result["samples_burst"] = [(s.ttft, s.outside) for s in burst]
        result.update(tokens_per_s=sum(s.tokens for s in burst) / wall,
                      ttft_p50_ms=ms([s.ttft for s in burst]),
                      ttft_p95_ms=1e3 * pct([s.ttft for s in burst], 0.95),
                      outside_ms=ms([s.outside for s in burst]),
                      burst_pace=burst_pace(burst))
    if "concurrent" in workloads:
        async def client(c: int) -> list[Sample]:
            out = []
            for r in range(per_client):
                i = c * per_client + r
                out.append(await path.one(i, None, lengths(i, max_tokens), conn=c))
            return out

        await path.prepare()
        start = time.perf_counter()
        runs = await asyncio.gather(*[client(c) for c in range(n)])
        wall = time.perf_counter() - start
        steady = [s for run in runs for s in run[1:]]
        result["samples_concurrent"] = [(s.ttft, s.outside) for s in steady]
        result.update(
            concurrent_tokens_per_s=sum(s.tokens for run in runs for s in run) / wall,
            concurrent_ttft_p50_ms=ms([s.ttft for s in steady]),
            concurrent_outside_ms=ms([s.outside for s in steady]),
            concurrent_missed_step=missed_step(steady))
    if "isolated" in workloads:
        await path.prepare()
        isolated = [await path.one(i, None, ISOLATED_TOKENS, conn=0) for i in range(ISOLATED)]
        result["samples_isolated"] = [(s.ttft, s.outside) for s in isolated]
        result.update(isolated_ttft_p50_ms=ms([s.ttft for s in isolated]),
                      isolated_outside_ms=ms([s.outside for s in isolated]))
    return result


async def run(args) -> dict:
    n = args.requests
    direct = await DirectPath.start(args.threads)
    server = ServerProcess("--threads", str(args.threads), "--kv-cache-memory", "512MiB",
                           "--engine-nice", str(NICE))
    wire = HTTPPath(server, n, "wire")
    httpx_path = HTTPPath(server, n, "httpx")
    rounds: list[dict] = []
    extra = None
    try:
        for path in (direct, wire, httpx_path):  # the same warm-up everywhere
            await asyncio.gather(*[path.one(i, None, 8) for i in range(n)])
        for r in range(args.rounds):
            first, then = ("engine", "HTTP") if r % 2 == 0 else ("HTTP", "engine")
            print(f"round {r + 1}/{args.rounds}: {first}, then {then}...", file=sys.stderr,
                  flush=True)
            # ABBA: the paths swap turns every round, so a slow drift of the machine's speed
            # does not always favour the one that goes first
            order = (("engine", direct), ("http", wire))
            results = {}
            for side, path in (order if r % 2 == 0 else order[::-1]):
                results[side] = await measured(path, n, args.max_tokens, args.workloads,
                                                args.per_client)
            rounds.append(results)
        if args.httpx:
            print("one round through httpx...", file=sys.stderr, flush=True)
            extra = {side: await measured(path, n, args.max_tokens, args.workloads,
                                          args.per_client)
                     for side, path in (("engine", direct), ("http", httpx_path))}
    finally:
        await direct.close()
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
    ap.add_argument("--httpx", action="store_true", help="one more round through httpx")
    ap.add_argument("--workloads", default="burst,concurrent,isolated",
                    type=lambda v: tuple(w for w in v.split(",") if w),
                    help="which of burst,concurrent,isolated to run (default: all three)")
    ap.add_argument("--per-client", type=int, default=PER_CLIENT,
                    help="requests each concurrent client sends (the first is not counted)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, metavar="PNG",
                    help="write the per-request distributions (all rounds) to this PNG")
    args = ap.parse_args()
    unknown = set(args.workloads) - {"burst", "concurrent", "isolated"}
    if unknown or not args.workloads:
        ap.error(f"--workloads {','.join(args.workloads)}: choose from burst,concurrent,isolated")
    if args.per_client < 2:
        ap.error(f"--per-client {args.per_client}: must be >= 2 (the first is not counted)")
    # The server's own loop (uvloop where installed) here too: the client's reading of 32 streams
    # shares these cores with the server, and is not what is measured.
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(run(args))
    rounds = result["rounds"]
    print(f"{'round':<6} {'path':<7} {'tok/s':>6} {'conc.':>6} | {'TTFT p50: burst':>15} "
          f"{'conc.':>7} {'1-by-1':>7} | {'outside engine: burst':>21} {'conc.':>6} {'1-by-1':>6}"
          f"   (ms)")
    extra = [result["httpx_round"]] if result["httpx_round"] else []
    for i, r in enumerate(rounds + extra):
        label = str(i + 1) if i < len(rounds) else "httpx"
        for side in ("engine", "http"):
            x = r[side]
            print(f"{label:<6} {side:<7} {x['tokens_per_s']:>6.1f} "
                  f"{x['concurrent_tokens_per_s']:>6.1f} | {x['ttft_p50_ms']:>15.1f} "
                  f"{x['concurrent_ttft_p50_ms']:>7.1f} {x['isolated_ttft_p50_ms']:>7.1f} | "
                  f"{x['outside_ms']:>21.2f} {x['concurrent_outside_ms']:>6.2f} "
                  f"{x['isolated_outside_ms']:>6.2f}")
    ratio = statistics.median(r["http"]["tokens_per_s"] / r["engine"]["tokens_per_s"]
                              for r in rounds)
    conc_ratio = statistics.median(r["http"]["concurrent_tokens_per_s"]
                                   / r["engine"]["concurrent_tokens_per_s"] for r in rounds)
    added = {key: diff(rounds, key) for key in (
        "outside_ms", "concurrent_outside_ms", "isolated_outside_ms", "ttft_p50_ms",
        "concurrent_ttft_p50_ms", "isolated_ttft_p50_ms")}
    summary = {"throughput_ratio": ratio, "concurrent_throughput_ratio": conc_ratio,
               "ttft_added_burst_ms": added["outside_ms"],
               "ttft_added_concurrent_ms": added["concurrent_outside_ms"],
               "ttft_added_isolated_ms": added["isolated_outside_ms"],
               "ab_ttft_p50_added_burst_ms": added["ttft_p50_ms"],
               "ab_ttft_p50_added_concurrent_ms": added["concurrent_ttft_p50_ms"],
               "ab_ttft_p50_added_isolated_ms": added["isolated_ttft_p50_ms"],
               "concurrent_missed_step": {side: statistics.median(
                   r[side]["concurrent_missed_step"] for r in rounds)
                   for side in ("engine", "http")}}
    print(f"medians over {len(rounds)} rounds of the per-round figures:")
    print(f"  HTTP keeps {ratio:.1%} of the engine's tokens/s in the burst, {conc_ratio:.1%} with "
          f"{args.requests} concurrent clients (target >= 90%)")
    print("  p50 TTFT added by HTTP (paired: HTTP's client-minus-engine TTFT less the direct "
          "path's; target <= 2 ms):")
    print(f"    {args.requests}-request burst {added['outside_ms']:+.2f} ms, {args.requests} "
          f"concurrent clients {added['concurrent_outside_ms']:+.2f} ms, one at a time "
          f"{added['isolated_outside_ms']:+.2f} ms")
    print(f"  A/B p50 TTFT difference (moves with the machine's drift between turns): burst "
          f"{added['ttft_p50_ms']:+.1f} ms, concurrent {added['concurrent_ttft_p50_ms']:+.1f} ms, "
          f"one at a time {added['isolated_ttft_p50_ms']:+.1f} ms")
    paces = [r for r in rounds if "burst_pace" in r["engine"]]
    whole = [r for r in paces if r["engine"]["burst_pace"]["one_step"]
             and r["http"]["burst_pace"]["one_step"]]
    if paces:
        pace = {side: {key: statistics.median(r[side]["burst_pace"][key] for r in whole)
                       for key in ("first_ms", "ingest_ms", "deliver_ms")}
                for side in ("engine", "http")
                } if whole else None
        summary["burst_pace"] = pace
        summary["burst_split_rounds"] = len(paces) - len(whole)
        if pace:
            e, h = pace["engine"], pace["http"]
            floor = args.requests / 2 * (h["ingest_ms"] + h["deliver_ms"] - e["ingest_ms"]
                                         - e["deliver_ms"])
            summary["burst_serial_loss_ms"] = floor
            print(f"  burst, where its time outside the engine goes (rounds where it ran as one "
                  f"step; HTTP, then directly): the first request in and first token out "
                  f"{h['first_ms']:.2f} / {e['first_ms']:.2f} ms; then the engine gets a request "
                  f"every {h['ingest_ms']:.3f} / {e['ingest_ms']:.3f} ms and clients their first "
                  f"token every {h['deliver_ms']:.3f} / {e['deliver_ms']:.3f} ms; the p50 request "
                  f"waits behind {args.requests // 2} of each: {floor:+.1f} ms")
        if len(whole) < len(paces):
            print(f"  burst split in {len(paces) - len(whole)} of {len(paces)} rounds (some "
                  f"requests got their first token a step later than the rest)")
    missed = summary["concurrent_missed_step"]
    if missed["engine"] == missed["engine"]:  # not NaN: the concurrent workload ran
        print(f"  concurrent clients' requests that reached the engine too late for the next step "
              f"(and waited one whole): engine {missed['engine']:.0%}, HTTP {missed['http']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({**result, "summary": summary}, indent=2))
    if args.plot:
        print(f"plot: {plot(rounds, args.requests, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
