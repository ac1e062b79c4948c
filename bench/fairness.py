"""Fair queuing between tenants: a quiet tenant's TTFT next to a flooding one, in one run.

Starts a cell of real processes (admin, one model server with `--max-num-seqs` slots, a gateway,
auth on) and makes two keys: tenant A and tenant B. It then measures B's TTFT three times:
- on an idle cell;
- while A keeps `--flood` streams in flight, with the gateway's fair queuing (`--queueing fair`);
- the same with fair queuing off (`--queueing off`: every request goes to the server, whose own
  queue is first come, first served).
B sends one streamed request at a time. The run prints p50/p95 TTFT of each, the ratios to the
idle cell and A's throughput, and writes a CDF plot (PNG) and the figures (JSON).

    .venv/bin/python bench/fairness.py [--flood 32] [--requests 20] [--slots 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cell import (SAX, BenchCell, percentile, port_url, save, stream_once,  # noqa: E402
                        ttft_cdf, wait)
PROMPT_B = "In one sentence, what is a hash table?"
PROMPT_A = "Write a short story about a lighthouse keeper and the sea."


async def measure(gateway: str, a: str, b: str, args, flood: bool, requests: int) -> dict:
    async with httpx.AsyncClient(base_url=gateway, timeout=600,
                                 limits=httpx.Limits(max_connections=256)) as client:
        stop = asyncio.Event()
        done = [0]

        async def flooder() -> None:
            while not stop.is_set():
                _, n = await stream_once(client, a, PROMPT_A, args.flood_tokens)
                done[0] += n

        tasks = [asyncio.create_task(flooder()) for _ in range(args.flood if flood else 0)]
        if flood:
            await asyncio.sleep(args.warmup)  # A's flood fills the slots and the queue
        started, ttfts = time.perf_counter(), []
        for i in range(requests):
            ttft, _ = await stream_once(client, b, PROMPT_B, args.b_tokens)
            ttfts.append(ttft)
            print(f"  B request {i + 1}/{requests}: TTFT {ttft * 1000:.0f} ms", flush=True)
        elapsed = time.perf_counter() - started
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"ttft": ttfts, "a_tokens_per_s": done[0] / elapsed if flood else None}


def plot(runs: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ttft_cdf(ax, {name: run["ttft"] for name, run in runs.items()},
             "tenant B's time to first token (ms, log)", "fraction of B's requests",
             "A quiet tenant beside a flooding one")
    return save(fig, out, "fairness.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flood", type=int, default=32, help="A's streams in flight")
    p.add_argument("--flood-tokens", type=int, default=64, help="tokens per A request")
    p.add_argument("--requests", type=int, default=20, help="B's requests per condition")
    p.add_argument("--off-requests", type=int, default=5,
                   help="B's requests with queueing off (each waits behind A's whole queue)")
    p.add_argument("--b-tokens", type=int, default=8, help="tokens per B request")
    p.add_argument("--slots", type=int, default=8, help="the server's --max-num-seqs")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of flood before B starts")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    with BenchCell() as cell:
        admin = cell.admin()
        cell.server(admin, args.slots, args.threads)
        keys = [cell.key(admin, t) for t in ("tenant-a", "tenant-b")]
        for queueing in ("fair", "off"):
            port, gateway = port_url()
            gw = cell.spawn(f"gateway-{queueing}", "gateway", "--admin", admin, "--port",
                            str(port), "--queueing", queueing, "--queue-timeout", "600",
                            "--max-queued", "1024")
            wait(gateway + "/health")
            if not runs:
                cell.publish(gateway)
            wait(gateway + "/health", 300, lambda r: r.json()["models"].get(SAX, 0) >= 1)
            time.sleep(1.0)  # the gateway follows the keys
            if not runs:
                print("idle cell: B alone...", flush=True)
                runs["idle"] = asyncio.run(measure(gateway, *keys, args, False, args.requests))
            print(f"A floods with {args.flood} streams, queueing={queueing}...", flush=True)
            runs[f"flood, queueing {queueing}"] = asyncio.run(measure(
                gateway, *keys, args, True,
                args.requests if queueing == "fair" else args.off_requests))
            gw.terminate()
            gw.wait(30)
    idle = percentile(runs["idle"]["ttft"], 50)
    summary = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "args": vars(args), "runs": {}}
    print(f"\nCPU capability {summary['cpu_capability']}; server slots {args.slots}, "
          f"A {args.flood} streams x {args.flood_tokens} tokens, B x {args.b_tokens} tokens")
    print(f"{'condition':<24} {'B p50 ms':>9} {'B p95 ms':>9} {'p50 / idle':>10} "
          f"{'A tok/s':>8}")
    for name, run in runs.items():
        p50, p95 = percentile(run["ttft"], 50), percentile(run["ttft"], 95)
        summary["runs"][name] = dict(run, p50=p50, p95=p95, ratio=p50 / idle)
        a = run["a_tokens_per_s"]
        print(f"{name:<24} {p50 * 1000:>9.0f} {p95 * 1000:>9.0f} {p50 / idle:>9.2f}x "
              f"{'-' if a is None else f'{a:.0f}':>8}")
    (out / "fairness.json").write_text(json.dumps(summary, indent=2))
    print(f"plot: {plot(runs, out)}; figures: {out / 'fairness.json'}")


if __name__ == "__main__":
    main()
