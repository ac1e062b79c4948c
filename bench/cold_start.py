"""Scale from zero: the time from a request held at the gateway for a model at zero replicas to
its first token, against the same requests to a warm replica, in one run.

Starts an admin, one model server and a gateway (auth on, as a deployed cell), publishes
SmolLM2 with `min_replicas: 0` and a short idle time, and for each round waits until the model is
at zero, sends `--requests` concurrent streaming chats, and records each one's time to first
token; then the same burst once the replica is warm. Prints the figures with the CPU capability
and draws them (PNG).

    .venv/bin/python bench/cold_start.py [--rounds 3] [--requests 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cell import SAX, BenchCell, port_url, save, wait  # noqa: E402


async def burst(gateway: str, key: str, n: int) -> list[float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0, timeout=120)

    async def one(i: int) -> float:
        sent = time.monotonic()
        stream = await client.chat.completions.create(
            model="smollm2", stream=True, max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": f"Say hello to person {i}."}])
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - sent
        return first

    out = await asyncio.gather(*[one(i) for i in range(n)])
    await client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/cold_start.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench/results/cold_start.png")
    args = ap.parse_args()
    capability = torch.backends.cpu.get_cpu_capability()
    cold, warm = [], []
    with BenchCell() as cell:
        admin = cell.admin("--heartbeat-interval", "0.5")
        cell.server(admin, slots=8, threads=0)
        port, gateway = port_url()
        cell.spawn("gateway", "gateway", "--admin", admin, "--port", str(port))
        wait(gateway + "/health")
        httpx.post(gateway + "/publish", headers=cell.headers, timeout=60, json={
            "model": SAX, "model_path": "smollm2-135m-instruct", "checkpoint": None,
            "replicas": 1, "autoscaling": {"min_replicas": 0, "max_replicas": 1,
                                           "up_window": 1, "down_window": 2,
                                           "idle_to_zero": 3}}).raise_for_status()
        key = cell.key(admin, "bench")
        for r in range(args.rounds):
            print(f"round {r + 1}: waiting for the model to scale to zero...", flush=True)
            deadline = time.monotonic() + 120
            while True:
                listed = httpx.get(f"{admin}/models{SAX}", headers=cell.headers).json()
                if listed["active_replicas"] == 0 and \
                        listed["autoscaling"]["desired_replicas"] == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the model did not scale to zero: {listed}")
                time.sleep(0.2)
            time.sleep(1.0)  # the replica is unloaded
            ttfts = asyncio.run(burst(gateway, key, args.requests))
            cold.append(ttfts)
            print(f"  cold: first token after {min(ttfts):.2f}-{max(ttfts):.2f} s", flush=True)
            warm.append(asyncio.run(burst(gateway, key, args.requests)))
            print(f"  warm: {min(warm[-1]):.2f}-{max(warm[-1]):.2f} s", flush=True)
        events = httpx.get(admin + "/autoscaler/events", headers=cell.headers).json()
    flat_cold = [t for ts in cold for t in ts]
    flat_warm = [t for ts in warm for t in ts]
    result = {"cpu_capability": capability, "requests": args.requests, "rounds": args.rounds,
              "cold_ttft_s": {"median": statistics.median(flat_cold), "max": max(flat_cold)},
              "warm_ttft_s": {"median": statistics.median(flat_warm), "max": max(flat_warm)},
              "decisions": [e["reason"] for e in events][-4:]}
    print(json.dumps(result, indent=2))
    print(f"CPU capability {capability}: cold start TTFT median "
          f"{result['cold_ttft_s']['median']:.2f} s, max {result['cold_ttft_s']['max']:.2f} s "
          f"(target < 5 s); warm median {result['warm_ttft_s']['median']:.2f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([flat_cold, flat_warm], tick_labels=["from zero", "warm replica"])
    ax.axhline(5.0, color="red", linestyle="--", linewidth=1, label="target 5 s")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{args.requests} concurrent streams x {args.rounds} rounds, {capability}")
    ax.legend()
    print("plot:", save(fig, args.plot.parent, args.plot.name))


if __name__ == "__main__":
    main()
