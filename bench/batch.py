"""Batch inference against its peer, in one run: the same requests through the engine offline
(`LLM.generate`) and as a batch through a cell (admin with the runner, one model server, a
gateway); then an interactive client's TTFT on the idle cell and while a batch runs.

- Throughput: completion tokens per second, the batch (from create to `completed`) over the
  offline engine (same engine settings: threads, `--max-num-seqs`). Target >= 0.9.
- Online TTFT: one streamed request at a time, p50 while a batch fills the cell over p50 on the
  idle cell. Target within 1.5x.

Prints the figures and the CPU capability, writes a plot (PNG) and the figures (JSON).

    .venv/bin/python bench/batch.py [--requests 96] [--tokens 32] [--slots 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cell import (BenchCell, percentile, port_url, save, stream_once,  # noqa: E402
                        ttft_cdf, wait)
from llmcell.batch.client import BatchClient  # noqa: E402
ONLINE = "In one sentence, what is a hash table?"


def prompts(n: int) -> list[str]:
    topics = ["rivers", "volcanoes", "libraries", "bridges", "owls", "tides", "glaciers", "bees"]
    return [f"Write a paragraph about {topics[i % len(topics)]} (note {i})." for i in range(n)]


def offline(args) -> dict:
    """The peer: the engine in this process, every request at once."""
    from llmcell.config.engine import EngineConfig
    from llmcell.engine.llm import LLM
    from llmcell.protocol.sampling import SamplingParams

    llm = LLM(config=EngineConfig(threads=args.threads, max_num_seqs=args.slots,
                                  kv_cache_memory=512 << 20, max_model_len=2048))
    texts = [llm.apply_chat_template([{"role": "user", "content": p}])
             for p in prompts(args.requests)]
    params = SamplingParams(max_tokens=args.tokens, ignore_eos=True, temperature=0)
    llm.generate(texts[:4], params)  # warm up
    start = time.perf_counter()
    outs = llm.generate(texts, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    del llm
    gc.collect()
    return {"seconds": elapsed, "tokens": tokens, "tokens_per_s": tokens / elapsed}


def batch_requests(n: int, tokens: int, tag: str = "") -> list[dict]:
    return [{"custom_id": f"{tag}{i}", "body": {
        "messages": [{"role": "user", "content": p}], "max_tokens": tokens,
        "ignore_eos": True, "temperature": 0}} for i, p in enumerate(prompts(n))]


def run_batch(client: BatchClient, n: int, tokens: int, tag: str) -> dict:
    start = time.perf_counter()
    made = client.submit(batch_requests(n, tokens, tag), model="smollm2")
    done = client.wait(made["id"], poll=0.2)
    elapsed = time.perf_counter() - start
    results = client.results(done)
    got = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in results
              if r["response"] and r["response"]["status_code"] == 200)
    return {"seconds": elapsed, "tokens": got, "tokens_per_s": got / elapsed,
            "status": done["status"], "counts": done["request_counts"]}


async def ttfts(gateway: str, key: str, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:
        out = []
        for _ in range(n):
            ttft, _ = await stream_once(client, key, ONLINE, 8)
            out.append(ttft)
        return out


def plot(figures: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["offline engine", "batch via the cell"]
    values = [figures["offline"]["tokens_per_s"], figures["batch"]["tokens_per_s"]]
    a.bar(names, values, color=["#888", "#3a7"])
    a.set_ylabel("completion tokens / s")
    a.set_title(f"throughput: batch = {values[1] / values[0]:.2f}x offline")
    ttft_cdf(b, figures["ttft"], "interactive TTFT (ms, log)", "fraction of requests",
             "an online client beside a batch")
    return save(fig, out, "batch.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=96, help="requests in the batch")
    p.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    p.add_argument("--slots", type=int, default=16, help="--max-num-seqs (engine and server)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--online", type=int, default=15, help="interactive requests per condition")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"offline: {args.requests} requests x {args.tokens} tokens...", flush=True)
    figures = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "args": vars(args),
               "offline": offline(args), "ttft": {}}
    with BenchCell() as cell:
        gw_port, gateway = port_url()
        admin = cell.admin("--batch-gateway", gateway)
        cell.server(admin, args.slots, args.threads)
        cell.spawn("gateway", "gateway", "--admin", admin, "--port", str(gw_port))
        wait(gateway + "/health")
        cell.publish(gateway)
        key = cell.key(admin, "team")
        time.sleep(1.0)  # the gateway follows the keys
        client = BatchClient(gateway, key)
        run_batch(client, 4, 4, "warm-")
        print("batch on the idle cell...", flush=True)
        figures["batch"] = run_batch(client, args.requests, args.tokens, "b-")
        print("online client on the idle cell...", flush=True)
        figures["ttft"]["idle"] = asyncio.run(ttfts(gateway, key, args.online))
        print("online client while a batch runs...", flush=True)
        long = client.submit(batch_requests(args.requests * 4, args.tokens, "long-"),
                             model="smollm2")
        while client.status(long["id"])["status"] != "in_progress":
            time.sleep(0.2)
        time.sleep(3.0)  # the batch fills the cell
        figures["ttft"]["during batch"] = asyncio.run(ttfts(gateway, key, args.online))
        try:
            client.cancel(long["id"])
        except RuntimeError:  # it finished already (a short run)
            pass
        client.close()
    off, bat = figures["offline"], figures["batch"]
    idle = percentile(figures["ttft"]["idle"], 50)
    busy = percentile(figures["ttft"]["during batch"], 50)
    figures.update(throughput_ratio=bat["tokens_per_s"] / off["tokens_per_s"],
                   ttft_p50_idle=idle, ttft_p50_during_batch=busy, ttft_ratio=busy / idle)
    print(f"\nCPU capability {figures['cpu_capability']}; {args.requests} requests x "
          f"{args.tokens} tokens, {args.slots} slots")
    print(f"offline engine   {off['tokens_per_s']:8.1f} tok/s ({off['seconds']:.1f} s)")
    print(f"batch via cell   {bat['tokens_per_s']:8.1f} tok/s ({bat['seconds']:.1f} s): "
          f"{figures['throughput_ratio']:.2f}x offline (target >= 0.90)")
    print(f"online TTFT p50  idle {idle * 1000:.0f} ms, during a batch {busy * 1000:.0f} ms: "
          f"{figures['ttft_ratio']:.2f}x (target <= 1.5)")
    (out / "batch.json").write_text(json.dumps(figures, indent=2))
    print(f"plot: {plot(figures, out)}; figures: {out / 'batch.json'}")


if __name__ == "__main__":
    main()
