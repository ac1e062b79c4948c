"""Guided decoding's cost: tokens/s of 32 concurrent streams with a JSON schema against the same
32 streams without one, on one model server, in the same run.

Both arms generate exactly `--tokens` tokens per stream, so they do the same model work: the free
arm sets `ignore_eos`, the guided arm's schema (an object holding a long array of short strings)
cannot close before the token limit. The arms alternate `--rounds` times; the median of each is
compared. A third arm (`guided, ends`) uses a schema an answer can finish, as users' do: its
answers are validated. Prints the CPU capability and the ratio; draws a bar chart (PNG).

    .venv/bin/python bench/guided.py [--streams 32] [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cell import median_bars, wait  # noqa: E402
from llmcell.local_cell import free_port  # noqa: E402

MODEL = "smollm2-135m-instruct"
LONG = {"type": "object", "properties": {"notes": {
    "type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 200}},
    "required": ["notes"], "additionalProperties": False}
"""A schema no answer can finish within the token limit: the guided arm runs to the limit."""
ENDS = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}},
    "required": ["name", "age", "tags"], "additionalProperties": False}


async def arm(url: str, streams: int, tokens: int, extra: dict) -> tuple[float, int, list[str]]:
    """(tokens/s, tokens, texts) of `streams` concurrent streams."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

    async def one(i: int) -> tuple[int, str]:
        stream = await client.chat.completions.create(
            model=MODEL, stream=True, max_tokens=tokens, temperature=0.8, seed=i,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"Write notes about topic {i} as JSON."}],
            extra_body=extra)
        used, parts = 0, []
        async for chunk in stream:
            if chunk.usage:
                used = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return used, "".join(parts)

    started = time.monotonic()
    done = await asyncio.gather(*[one(i) for i in range(streams)])
    took = time.monotonic() - started
    await client.close()
    total = sum(n for n, _ in done)
    return total / took, total, [t for _, t in done]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="engine threads (0: all)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/guided.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench/results/guided.png")
    args = ap.parse_args()
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "llmcell.cli", "server", "--port", str(port), "--model", MODEL,
           "--kv-cache-memory", "1GiB", "--max-model-len", "2048", "--max-num-seqs",
           str(args.streams)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        wait(url + "/ready", 300)
        arms = {"free": {"ignore_eos": True},
                "guided (JSON schema)": {"response_format": {
                    "type": "json_schema", "json_schema": {"name": "notes", "schema": LONG}}}}
        rates: dict[str, list[float]] = {name: [] for name in arms}
        asyncio.run(arm(url, 4, 8, {}))  # warm-up
        for r in range(args.rounds):
            for name, extra in arms.items():
                rate, total, _ = asyncio.run(arm(url, args.streams, args.tokens, extra))
                rates[name].append(rate)
                print(f"round {r + 1} {name}: {rate:.1f} tok/s ({total} tokens)", flush=True)
        rate, total, texts = asyncio.run(arm(url, args.streams, args.tokens, {
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "person", "schema": ENDS}}}))
        valid = sum(1 for t in texts if _valid(t))
        compile_count = _metric(url, "llmcell:grammar_compile_seconds_count")
        compile_sum = _metric(url, "llmcell:grammar_compile_seconds_sum")
    finally:
        server.terminate()
        server.wait(30)
    median = {name: statistics.median(v) for name, v in rates.items()}
    ratio = median["guided (JSON schema)"] / median["free"]
    result = {"cpu_capability": capability, "streams": args.streams, "tokens": args.tokens,
              "rounds": rates, "median_tok_s": median, "guided_over_free": ratio,
              "ends_arm": {"tok_s": rate, "tokens": total, "valid": valid, "of": len(texts)},
              "grammar_compiles": compile_count,
              "mean_compile_ms": 1e3 * compile_sum / max(compile_count, 1)}
    print(json.dumps(result, indent=2))
    print(f"CPU capability {capability}: guided / free = {ratio:.2f} (target >= 0.85); "
          f"schema that ends: {valid}/{len(texts)} answers valid")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("plot:", median_bars(median, f"{args.streams} streams x {args.tokens} tokens, "
                                       f"{capability}: {ratio:.2f}x", args.plot))


def _valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), ENDS)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


if __name__ == "__main__":
    main()
