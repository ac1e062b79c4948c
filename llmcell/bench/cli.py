"""`llmcell bench`: flags -> `BenchConfig` -> workload -> load -> report (with a progress bar)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

from llmcell.config.bench import BenchConfig


class Progress:
    """A one-line progress bar on stderr: done/total, errors, elapsed, requests/s."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.enabled = enabled
        self.start = time.monotonic()

    def __call__(self, result) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        if not self.enabled:
            return
        tty = sys.stderr.isatty()
        if not tty and self.done % max(1, self.total // 10) and self.done != self.total:
            return  # a log file gets a line per tenth, a terminal a live bar
        elapsed = time.monotonic() - self.start
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"{chr(13) if tty else ''}[{'#' * filled}{'.' * (30 - filled)}] "
                         f"{self.done}/{self.total}  errors {self.failed}  {elapsed:.1f}s  "
                         f"{self.done / max(elapsed, 1e-9):.2f} req/s")
        if self.done == self.total or not tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


def workload(config: BenchConfig):
    from llmcell.bench import datasets

    if config.dataset == "synthetic":
        return datasets.synthetic(config.num_requests, config.prompt_tokens,
                                  config.output_tokens, config.seed)
    if config.dataset == "shared-prefix":
        return datasets.shared_prefix(config.num_requests, config.prefixes,
                                      config.prefix_tokens, config.output_tokens, config.seed)
    path = Path(config.dataset)
    if not path.is_file():
        raise ValueError(f"dataset={config.dataset!r} is not synthetic, shared-prefix or a "
                         "JSONL file")
    return datasets.from_jsonl(path, config.num_requests, config.output_tokens)


def run_bench(config: BenchConfig) -> dict:
    from llmcell.bench.client import run_load
    from llmcell.bench.report import markdown, summarize, write_report

    requests = workload(config)
    progress = Progress(len(requests), config.progress)
    results, duration = asyncio.run(run_load(
        config.url, config.model, requests, None if config.rate else config.concurrency,
        config.rate, config.seed, config.api_key, config.timeout, progress))
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "api_key"}
    if config.output:
        summary = write_report(results, duration, settings, Path(config.output))
    else:
        summary = summarize(results, duration, settings)
    print(markdown(summary))
    if config.output:
        print(f"report: {config.output}/summary.json, summary.md, latency_cdf.png, "
              "throughput.png, requests.jsonl", file=sys.stderr)
    return summary


def cmd_bench(args: argparse.Namespace) -> int:
    summary = run_bench(BenchConfig(
        url=args.url, model=args.model, num_requests=args.num_requests,
        concurrency=args.concurrency, rate=args.rate, dataset=args.dataset,
        prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens,
        prefixes=args.prefixes, prefix_tokens=args.prefix_tokens, seed=args.seed,
        output=args.output, api_key=args.api_key, timeout=args.timeout,
        progress=not args.no_progress))
    return 0 if summary["completed"] else 1


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="load-test an OpenAI-compatible endpoint and report",
                       description="Send streaming chat completions to URL (llmcell's gateway or "
                                   "server, vLLM, ...) at a fixed concurrency or Poisson rate; "
                                   "report TTFT, time per output token, inter-token and "
                                   "end-to-end latency (P50/P90/P95/P99), throughput and errors.")
    b.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8888")
    b.add_argument("--model", required=True, help="model name the endpoint serves")
    b.add_argument("--num-requests", type=int, default=100, help="requests (default: 100)")
    b.add_argument("--concurrency", type=int, default=8,
                   help="requests in flight at once (default: %(default)s)")
    b.add_argument("--rate", type=float, default=None,
                   help="Poisson arrivals in requests/s instead of fixed concurrency")
    b.add_argument("--dataset", default="synthetic",
                   help="synthetic, shared-prefix, or a JSONL file of {prompt|messages, "
                        "max_tokens} (default: synthetic)")
    b.add_argument("--prompt-tokens", type=int, default=256,
                   help="synthetic: mean prompt length in words (~tokens) (default: 256)")
    b.add_argument("--output-tokens", type=int, default=128,
                   help="mean max_tokens per request (default: %(default)s)")
    b.add_argument("--prefixes", type=int, default=4,
                   help="shared-prefix: distinct system prompts (default: %(default)s)")
    b.add_argument("--prefix-tokens", type=int, default=1000,
                   help="shared-prefix: words per system prompt (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0, help="workload and arrival seed (default: 0)")
    b.add_argument("--output", default=None,
                   help="folder for summary.json, summary.md, PNG plots and requests.jsonl")
    b.add_argument("--api-key", default=None, help="sent as a Bearer token")
    b.add_argument("--timeout", type=float, default=600.0,
                   help="seconds one request may take (default: %(default)s)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.set_defaults(func=cmd_bench)
