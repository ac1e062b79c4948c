"""Routing policies compared on one workload, in one run: round_robin, prefix_affinity and
kv_affinity (and any others named with --policies).

Starts a local cell of 4 model servers with one replica each (the CPU threads split across them)
and a gateway, once per policy (a fresh cell each time, so no prefix cache carries over), and
drives the same workload through the gateway:

- `multi-turn` (default): 16 tenants, each with a system prompt of ~1,000 words whose first
  `--shared-tokens` are a preamble every tenant shares (a platform's common instructions), and
  conversations of several turns, each turn carrying the answers so far;
- `shared-prefix`: N long system prompts shared by many single-turn users.

Prints p50/p90/p95 TTFT, throughput and the prefix-cache hit rate the servers report
(`llmcell:prefix_cache_hits / queries`) per policy, the ratios against prefix_affinity, the CPU
capability, and draws the TTFT CDFs (PNG).

    .venv/bin/python bench/routing.py [--workload multi-turn] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cell import save, ttft_cdf  # noqa: E402
from llmcell.bench.client import run_conversations, run_load  # noqa: E402
from llmcell.bench.datasets import multi_turn, shared_prefix  # noqa: E402
from llmcell.bench.report import summarize  # noqa: E402
from llmcell.local_cell import CellPlan, LocalCell, free_port  # noqa: E402

SAX = "/sax/test/smollm2"
SERVERS = 4


def counter(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$",
                                                       text, re.M))


def wait_ready(cell: LocalCell, policy: str) -> None:
    deadline = time.monotonic() + 300
    while httpx.get(f"{cell.admin_url}/models{SAX}").json()["active_replicas"] < SERVERS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{SERVERS} replicas did not become active")
        time.sleep(0.5)
    while httpx.get(cell.gateway_url + "/health").json()["models"].get(SAX, 0) < SERVERS:
        time.sleep(0.2)
    if policy == "kv_affinity":  # the gateway has the tokenizer and follows every replica
        while not re.search(r'^llmcell:gateway_kv_tokenizer_loaded\{[^}]*\} 1\.0$',
                            httpx.get(cell.gateway_url + "/metrics").text, re.M):
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not load the tokenizer")
            time.sleep(0.2)


def run_policy(policy: str, args, state_dir: Path) -> tuple[dict, list]:
    plan = CellPlan(servers=SERVERS, replicas=SERVERS, policy=policy,
                    gateway_port=free_port("127.0.0.1"), admin_port=free_port("127.0.0.1"),
                    state_path=state_dir / f"{policy}.sqlite3",
                    kv_cache_memory=args.kv_cache_mib << 20, server_memory=2 << 30,
                    threads=args.threads)
    cell = LocalCell(plan)
    try:
        cell.start(say=lambda line: None)
        wait_ready(cell, policy)
        if args.workload == "multi-turn":
            convs = multi_turn(args.tenants, args.conversations, args.turns, args.system_tokens,
                               args.shared_tokens, args.output_tokens, seed=0)
            print(f"{policy}: {len(convs)} conversations of {args.turns} turns "
                  f"({args.tenants} tenants, system prompts of ~{args.system_tokens} words, "
                  f"~{args.shared_tokens} shared), {args.concurrency} at once...", flush=True)
            results, duration = asyncio.run(run_conversations(
                cell.gateway_url, "smollm2", convs, args.concurrency))
        else:
            requests = shared_prefix(args.requests, args.prefixes, args.system_tokens,
                                     args.output_tokens, seed=0)
            print(f"{policy}: {args.requests} requests, {args.prefixes} shared prefixes of "
                  f"~{args.system_tokens} words, concurrency {args.concurrency}...", flush=True)
            results, duration = asyncio.run(run_load(cell.gateway_url, "smollm2", requests,
                                                     args.concurrency, None))
        summary = summarize(results, duration, {"policy": policy})
        hits = queries = 0.0
        for server in httpx.get(cell.admin_url + "/cell/servers").json():
            text = httpx.get(server["address"] + "/metrics").text
            hits += counter(text, "llmcell:prefix_cache_hits_total")
            queries += counter(text, "llmcell:prefix_cache_queries_total")
        summary["prefix_cache_hit_rate"] = hits / queries if queries else 0.0
        return summary, [r.ttft for r in results if r.ok and r.ttft is not None]
    finally:
        cell.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["multi-turn", "shared-prefix"], default="multi-turn")
    p.add_argument("--policies", default="round_robin,prefix_affinity,kv_affinity")
    p.add_argument("--tenants", type=int, default=16)
    p.add_argument("--conversations", type=int, default=2, help="per tenant (multi-turn)")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--system-tokens", type=int, default=1000,
                   help="words of each system prompt (about one token each)")
    p.add_argument("--shared-tokens", type=int, default=600,
                   help="of which every tenant shares the first (multi-turn)")
    p.add_argument("--requests", type=int, default=64, help="(shared-prefix)")
    p.add_argument("--prefixes", type=int, default=8, help="(shared-prefix)")
    p.add_argument("--output-tokens", type=int, default=24)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--kv-cache-mib", type=int, default=256, help="per server")
    p.add_argument("--threads", type=int, default=0, help="CPU threads split over 4 servers")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG of the TTFT CDFs")
    args = p.parse_args()
    policies = args.policies.split(",")
    capability = torch.backends.cpu.get_cpu_capability()
    runs, ttfts = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for policy in policies:
            runs[policy], ttfts[policy] = run_policy(policy, args, Path(d))
    print(f"\nCPU capability: {capability}; workload {args.workload}")
    print(f"{'policy':<16} {'TTFT p50 ms':>12} {'p90 ms':>9} {'p95 ms':>9} {'out tok/s':>10} "
          f"{'req/s':>7} {'prefix hits':>12} {'failed':>7}")
    for policy, s in runs.items():
        t = s["ttft_s"]
        print(f"{policy:<16} {t['p50'] * 1000:>12.1f} {t['p90'] * 1000:>9.1f} "
              f"{t['p95'] * 1000:>9.1f} {s['output_token_throughput']:>10.1f} "
              f"{s['request_throughput']:>7.2f} {s['prefix_cache_hit_rate']:>12.1%} "
              f"{s['failed']:>7}")
    if "prefix_affinity" in runs:
        base = runs["prefix_affinity"]["ttft_s"]
        for policy, s in runs.items():
            if policy != "prefix_affinity":
                print(f"{policy} / prefix_affinity TTFT: p50 x{s['ttft_s']['p50'] / base['p50']:.2f}"
                      f", p90 x{s['ttft_s']['p90'] / base['p90']:.2f} (below 1 = faster)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_capability": capability, "args": vars(args),
                                               "runs": runs}, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ttft_cdf(ax, ttfts, "time to first token (ms, log)", "fraction of requests",
                 f"Routing on {SERVERS} servers, {args.workload} ({capability})")
        out = Path(args.plot)
        print(f"plot: {save(fig, out.parent, out.name)}")


if __name__ == "__main__":
    main()
