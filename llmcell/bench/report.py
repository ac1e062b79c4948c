"""Turn timed requests into a report: summary statistics, JSON, Markdown and PNG plots.

The JSON is the source: the Markdown is formatted from the same summary dict, so the two never
disagree. Plots: CDFs of TTFT, time per output token and end-to-end latency; output tokens/s and
completed requests/s over the run, in one-second bins.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmcell.bench.client import RequestResult

QUANTILES = (50, 90, 95, 99)


def distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in QUANTILES}}
    a = np.asarray(values, dtype=float)
    return {"count": int(a.size), "mean": float(a.mean()),
            **{f"p{q}": float(np.percentile(a, q)) for q in QUANTILES}}


def summarize(results: list[RequestResult], duration: float, config: dict) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            kind = r.error.split(":", 1)[0]
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "config": config,
        "requests": len(results), "completed": len(ok), "failed": len(results) - len(ok),
        "errors": errors,
        "error_samples": [r.error for r in results if not r.ok][:5],
        "duration_s": duration,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_token_throughput": out_tokens / duration if duration else 0.0,
        "total_token_throughput": (out_tokens + prompt_tokens) / duration if duration else 0.0,
        "prompt_tokens": prompt_tokens, "output_tokens": out_tokens,
        "ttft_s": distribution([r.ttft for r in ok if r.ttft is not None]),
        "tpot_s": distribution([r.tpot for r in ok if r.tpot is not None]),
        "itl_s": distribution([g for r in ok for g in r.itl()]),
        "e2e_s": distribution([r.latency for r in ok]),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def markdown(summary: dict) -> str:
    c = summary["config"]
    load = (f"concurrency {c['concurrency']}" if c.get("rate") is None
            else f"Poisson rate {c['rate']} req/s")
    lines = [
        "# llmcell bench", "",
        f"- target: `{c['url']}`, model `{c['model']}`, dataset `{c['dataset']}`, {load}",
        f"- requests: {summary['requests']} sent, {summary['completed']} completed, "
        f"{summary['failed']} failed",
        f"- duration: {summary['duration_s']:.2f} s",
        f"- request throughput: {summary['request_throughput']:.2f} req/s",
        f"- output token throughput: {summary['output_token_throughput']:.1f} tok/s",
        f"- total token throughput: {summary['total_token_throughput']:.1f} tok/s", "",
        "| metric (ms) | mean | " + " | ".join(f"p{q}" for q in QUANTILES) + " |",
        "|---|---|" + "---|" * len(QUANTILES)]
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "time per output token"),
                      ("itl_s", "inter-token latency"), ("e2e_s", "end-to-end latency")):
        d = summary[key]
        lines.append(f"| {name} | {_ms(d['mean'])} | "
                     + " | ".join(_ms(d[f"p{q}"]) for q in QUANTILES) + " |")
    if summary["errors"]:
        lines += ["", "Errors: " + ", ".join(f"{k} x{v}" for k, v in summary["errors"].items())]
    return "\n".join(lines) + "\n"


def plot(results: list[RequestResult], duration: float, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.ok]
    series = (("TTFT", [r.ttft for r in ok if r.ttft is not None]),
              ("time per output token", [r.tpot for r in ok if r.tpot is not None]),
              ("end-to-end latency", [r.latency for r in ok]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (name, values) in zip(axes, series):
        if values:
            xs = np.sort(np.asarray(values)) * 1000
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, drawstyle="steps-post")
        ax.set_title(f"{name} CDF")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    cdf = out / "latency_cdf.png"
    fig.savefig(cdf, dpi=100)
    plt.close(fig)

    bins = np.arange(0, max(1.0, duration) + 1.0, 1.0)
    tokens = [t for r in ok for t in r.chunk_times]
    done = [r.end for r in ok]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.hist(tokens, bins=bins, alpha=0.7, label="output chunks/s (~tokens/s)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("per second")
    ax2 = ax.twinx()
    counts, _ = np.histogram(done, bins=bins)
    ax2.plot(bins[:-1] + 0.5, counts, color="tab:red", marker="o", label="completed requests/s")
    ax2.set_ylabel("requests/s")
    fig.legend(loc="upper right")
    ax.set_title("throughput over time")
    fig.tight_layout()
    over_time = out / "throughput.png"
    fig.savefig(over_time, dpi=100)
    plt.close(fig)
    return [cdf, over_time]


def write_report(results: list[RequestResult], duration: float, config: dict,
                 out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, duration, config)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    with (out / "requests.jsonl").open("w") as f:
        for r in results:
            f.write(json.dumps({"start": r.start, "end": r.end, "ttft": r.ttft,
                                "prompt_tokens": r.prompt_tokens,
                                "output_tokens": r.output_tokens, "error": r.error}) + "\n")
    plot(results, duration, out)
    return summary
