"""The autoscaler's decisions on synthetic load traces: a step up, a spike shorter than the up
window, a slow decay, flapping load, idle to zero and back, the bounds, and the policy's checks."""

from __future__ import annotations

import pytest

from llmcell.admin.autoscaler import LoadSample, decide, trim
from llmcell.protocol.autoscaling import ScalingPolicy

POLICY = ScalingPolicy(min_replicas=1, max_replicas=3, target=4, up_window=10, down_window=30,
                       idle_to_zero=120)
SLOTS = 8


def run(policy: ScalingPolicy, trace, start: int = 1, step: float = 1.0):
    """Feed `trace(t, replicas) -> (running, waiting, held)` once a second; the desired count
    after each step, and the reasons of the changes."""
    samples, current, counts, reasons = [], start, [], []
    for i, t in enumerate(range(int(len_of(trace)))):
        running, waiting, held = trace(t, current)
        samples.append(LoadSample(float(t), current, running, waiting, held, 0.0, SLOTS))
        samples = trim(samples, policy, float(t))
        d = decide(policy, samples, current, float(t))
        if d.desired != current:
            reasons.append((t, d.desired, d.reason))
        current = d.desired
        counts.append(current)
    return counts, reasons


def len_of(trace) -> int:
    return getattr(trace, "length", 120)


def demand(streams: int, replicas: int) -> tuple[int, int, int]:
    """`streams` concurrent requests over `replicas` replicas of SLOTS slots each."""
    running = min(streams, replicas * SLOTS)
    return running, streams - running, 0


def test_step_up_waits_for_the_up_window_then_caps_at_max():
    def trace(t, n):
        return demand(48 if t >= 5 else 2, n)
    counts, reasons = run(POLICY, trace)
    assert counts[:14] == [1] * 14  # 10 s of load before the first change
    assert max(counts) == 3 and counts[-1] == 3
    assert "capped at max_replicas 3" in reasons[0][2]


def test_a_spike_shorter_than_the_up_window_adds_nothing():
    def trace(t, n):
        return demand(48 if 20 <= t < 26 else 2, n)
    counts, _ = run(POLICY, trace)
    assert set(counts) == {1}


def test_slow_decay_steps_down_after_the_down_window_and_never_below_min():
    def trace(t, n):
        return demand(max(0, 48 - t // 2), n)
    trace.length = 200
    counts, reasons = run(POLICY, trace, start=3)
    assert counts[-1] == 1 and min(counts) == 1
    firsts = [t for t, _, _ in reasons]
    assert firsts and firsts[0] >= 30  # nothing removed before a whole down window
    assert all(b[1] < a[1] for a, b in zip(reasons, reasons[1:]))  # only down, step by step


def test_flapping_load_does_not_oscillate():
    def trace(t, n):
        return demand(48 if (t // 5) % 2 else 0, n)  # 5 s on, 5 s off
    trace.length = 300
    counts, reasons = run(POLICY, trace)
    assert len(reasons) <= 1  # at most settles once; never up and down again


def test_idle_to_zero_and_back_from_a_held_request():
    policy = ScalingPolicy(min_replicas=0, max_replicas=2, target=4, up_window=10,
                           down_window=30, idle_to_zero=60)

    def trace(t, n):
        if t < 10:
            return demand(4, n)
        if t == 150 and n == 0:
            return 0, 0, 3  # a gateway holds 3 requests
        return 0, 0, 0
    trace.length = 152
    counts, reasons = run(policy, trace)
    zero_at = counts.index(0)
    assert 9 + 60 <= zero_at <= 9 + 60 + 2  # idle 60 s after the last busy second (t=9)
    assert counts[149] == 0 and counts[150] == 1  # held requests wake it at once
    assert "scale to zero" in [r for r in reasons if r[1] == 0][0][2]
    assert "scale from zero" in reasons[-1][2]


def test_metrics_running_and_kv():
    running = ScalingPolicy(min_replicas=1, max_replicas=8, metric="running", target=10,
                            up_window=1, down_window=1)
    s = [LoadSample(0.0, 1, 20, 15), LoadSample(2.0, 1, 20, 15)]
    assert decide(running, s, 1, 2.0).desired == 4
    kv = ScalingPolicy(min_replicas=1, max_replicas=8, metric="kv", target=0.5, up_window=1,
                       down_window=1)
    s = [LoadSample(0.0, 2, kv_usage=1.8), LoadSample(2.0, 2, kv_usage=1.8)]
    assert decide(kv, s, 2, 2.0).desired == 4


@pytest.mark.parametrize("fields, words", [
    ({"min_replicas": 3, "max_replicas": 2}, "above max_replicas"),
    ({"target": -1}, "target"),
    ({"up_window": 0}, "windows"),
    ({"metric": "qps"}, "metric"),
    ({"max_replicas": 0}, "max_replicas"),
    ({"metric": "kv", "target": 2}, "<= 1"),
    ({"replicas": 2}, "unknown field"),
])
def test_bad_policies_name_the_field(fields, words):
    with pytest.raises(ValueError, match=words):
        ScalingPolicy.from_json({"min_replicas": 1, "max_replicas": 3, **fields})
