"""Prefix-aware routing versus round robin on a shared-prefix workload, in one run.

Starts a local cell of 4 model servers with one replica each (CPU threads split across them) and
a gateway, once per policy (a fresh cell each time, so no prefix cache carries over), and drives
the same shared-prefix workload (N long system prompts shared by many users) through the gateway
with `llmcell bench`'s client. Prints p50/p95 TTFT for both policies, their ratio, and the prefix
cache hit rate the model servers report (`llmcell:prefix_cache_hits / queries`).

    .venv/bin/python bench/routing.py [--requests 64] [--prefixes 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

import httpx

from llmcell.bench.client import run_load
from llmcell.bench.datasets import shared_prefix
from llmcell.bench.report import summarize
from llmcell.local_cell import CellPlan, LocalCell, free_port

SAX = "/sax/test/smollm2"


def counter(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$",
                                                       text, re.M))


def run_policy(policy: str, args, state_dir: Path) -> dict:
    plan = CellPlan(servers=4, replicas=4, policy=policy, gateway_port=free_port("127.0.0.1"),
                    admin_port=free_port("127.0.0.1"),
                    state_path=state_dir / f"{policy}.sqlite3",
                    kv_cache_memory=256 << 20, server_memory=2 << 30, threads=args.threads)
    cell = LocalCell(plan)
    try:
        cell.start(say=lambda line: None)
        deadline = time.monotonic() + 300
        while httpx.get(f"{cell.admin_url}/models{SAX}").json()["active_replicas"] < 4:
            if time.monotonic() > deadline:
                raise TimeoutError("4 replicas did not become active")
            time.sleep(0.5)
        while httpx.get(cell.gateway_url + "/health").json()["models"].get(SAX, 0) < 4:
            time.sleep(0.2)
        requests = shared_prefix(args.requests, args.prefixes, args.prefix_tokens,
                                 args.output_tokens, seed=0)
        print(f"{policy}: {args.requests} requests, {args.prefixes} shared prefixes of "
              f"~{args.prefix_tokens} words, concurrency {args.concurrency}...", flush=True)
        results, duration = asyncio.run(run_load(cell.gateway_url, "smollm2", requests,
                                                 args.concurrency, None))
        summary = summarize(results, duration, {"policy": policy})
        hits = queries = 0.0
        for server in httpx.get(cell.admin_url + "/cell/servers").json():
            text = httpx.get(server["address"] + "/metrics").text
            hits += counter(text, "llmcell:prefix_cache_hits_total")
            queries += counter(text, "llmcell:prefix_cache_queries_total")
        summary["prefix_cache_hit_rate"] = hits / queries if queries else 0.0
        return summary
    finally:
        cell.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prefixes", type=int, default=8)
    p.add_argument("--prefix-tokens", type=int, default=800)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="CPU threads split over 4 servers")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        runs = {policy: run_policy(policy, args, Path(d))
                for policy in ("round_robin", "prefix_affinity")}
    print(f"\n{'policy':<16} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'e2e p50 ms':>11} "
          f"{'prefix hits':>12} {'failed':>7}")
    for policy, s in runs.items():
        print(f"{policy:<16} {s['ttft_s']['p50'] * 1000:>12.1f} {s['ttft_s']['p95'] * 1000:>12.1f}"
              f" {s['e2e_s']['p50'] * 1000:>11.1f} {s['prefix_cache_hit_rate']:>12.1%}"
              f" {s['failed']:>7}")
    rr, pa = runs["round_robin"]["ttft_s"], runs["prefix_affinity"]["ttft_s"]
    print(f"\nprefix_affinity / round_robin TTFT: p50 x{pa['p50'] / rr['p50']:.2f}, "
          f"p95 x{pa['p95'] / rr['p95']:.2f} (below 1 = faster)")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
