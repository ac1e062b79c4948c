"""Figures of `bench/server_overhead.py` computed from its samples: percentiles, the share of
requests that missed a step, where a burst's time outside the engine goes, and the plot (PNG)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Sample:
    ttft: float  # seconds, as the client saw it
    outside: float  # the client's TTFT less the engine's own
    tokens: int
    queued: float = 0.0  # the engine's arrival to the request's first step
    prefill: float = 0.0  # that step's start to the first token (about one step)


def missed_step(samples: list[Sample]) -> float:
    """The share of requests that reached the engine too late for the step after their arrival
    and waited for it whole (queued more than half a step) before their prefill. The paired
    figure counts that wait as the engine's (it follows the request's arrival), so a path that
    delivers requests later shows it here, and in the A/B TTFT, not in the paired figure."""
    step = statistics.median(s.prefill for s in samples)
    return sum(s.queued > step / 2 for s in samples) / len(samples)


def burst_pace(samples: list[Sample]) -> dict:
    """Where a burst's time outside the engine goes, per request: how often the path hands the
    engine a request (`ingest_ms`) and how often it hands a client its first token
    (`deliver_ms`), and the fixed part: the first request's way in plus the first token's way
    out (`first_ms`: the least client TTFT less the greatest engine TTFT). Valid when the whole
    burst was prefilled in one step (`one_step`): every request then gets its first token at the
    same engine instant F, so the spread of the engine's own TTFTs (F less each arrival) is the
    spread of the arrivals, and the spread of the client TTFTs is the spread of the deliveries.
    A path that takes requests in and hands tokens out one at a time puts the burst's p50
    request behind about n/2 of each, so n/2 times the difference of (ingest + deliver) between
    the paths is what the burst's p50 loses to serial work."""
    engine = [s.ttft - s.outside for s in samples]
    client = [s.ttft for s in samples]
    step = statistics.median(s.prefill for s in samples)
    gaps = len(samples) - 1 or 1
    return {"first_ms": 1e3 * (min(client) - max(engine)),
            "ingest_ms": 1e3 * (max(engine) - min(engine)) / gaps,
            "deliver_ms": 1e3 * (max(client) - min(client)) / gaps,
            "one_step": max(s.queued + s.prefill for s in samples)
            - min(s.queued + s.prefill for s in samples) < step / 2}


def plot(rounds: list[dict], n: int, out: Path) -> Path:
    """One column per workload: the CDF of each request's time outside the engine (its client
    TTFT less the engine's own), HTTP against the direct path, all rounds pooled; below, the CDF
    of the client TTFT itself."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(w, title) for w, title in (("burst", f"burst of {n}"),
                                         ("concurrent", f"{n} concurrent clients"),
                                         ("isolated", "one at a time"))
             if any(r["engine"].get(f"samples_{w}") for r in rounds)]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, (workload, title) in enumerate(names):
        for side, label in (("engine", "engine directly"), ("http", "through HTTP")):
            pairs = [p for r in rounds for p in r[side].get(f"samples_{workload}", [])]
            for row, values in enumerate(([o for _, o in pairs], [t for t, _ in pairs])):
                xs = sorted(1e3 * v for v in values)
                axes[row][col].plot(xs, [(i + 1) / len(xs) for i in range(len(xs))],
                                    drawstyle="steps-post", label=label)
        axes[0][col].set_title(f"{title}: time outside the engine")
        axes[1][col].set_title(f"{title}: client TTFT")
        for row in (0, 1):
            axes[row][col].set_xlabel("ms")
            axes[row][col].set_ylabel("fraction of requests")
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
