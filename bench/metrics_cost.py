"""What recording metrics costs: one model server with metrics on, then off, same workload.

Runs rounds of on/off pairs (alternating, to spread the machine's noise over both) of a
synthetic streaming workload through `llmcell bench`'s client, and prints output tokens/s with
metrics on and off and the ratio (the target: on keeps >= 97%).

    .venv/bin/python bench/metrics_cost.py [--rounds 2] [--requests 48] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx

from llmcell.bench.client import run_load
from llmcell.bench.datasets import synthetic
from llmcell.bench.report import summarize
from llmcell.local_cell import free_port


def start_server(metrics: bool) -> tuple[subprocess.Popen, str]:
    port = free_port("127.0.0.1")
    cmd = [sys.executable, "-m", "llmcell.cli", "server", "--port", str(port),
           "--kv-cache-memory", "512MiB"] + ([] if metrics else ["--no-metrics"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not become ready")


def measure(metrics: bool, args) -> float:
    proc, url = start_server(metrics)
    try:
        warm = synthetic(4, args.prompt_tokens, 8, seed=99)
        asyncio.run(run_load(url, "smollm2-135m-instruct", warm, 4, None))
        requests = synthetic(args.requests, args.prompt_tokens, args.output_tokens, seed=0)
        results, duration = asyncio.run(run_load(url, "smollm2-135m-instruct", requests,
                                                 args.concurrency, None))
        s = summarize(results, duration, {})
        if s["failed"]:
            raise RuntimeError(f"{s['failed']} requests failed: {s['error_samples']}")
        if metrics:
            text = httpx.get(url + "/metrics").text
            assert "llmcell:time_to_first_token_seconds_count" in text
        return s["output_token_throughput"]
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=64)
    args = p.parse_args()
    on, off = [], []
    for i in range(args.rounds):
        for metrics in ((True, False) if i % 2 == 0 else (False, True)):
            tps = measure(metrics, args)
            (on if metrics else off).append(tps)
            print(f"round {i + 1}: metrics {'on ' if metrics else 'off'} {tps:7.1f} tok/s",
                  flush=True)
    mean_on, mean_off = sum(on) / len(on), sum(off) / len(off)
    print(f"\nmetrics on  {mean_on:.1f} tok/s\nmetrics off {mean_off:.1f} tok/s\n"
          f"on keeps {mean_on / mean_off:.1%} of off (target >= 97%)")


if __name__ == "__main__":
    main()
