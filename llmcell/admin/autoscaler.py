"""Autoscaling decisions as data: a pure function from a model's policy and a window of its load
(what its replicas report with their heartbeats, and the requests gateways hold for it) to the
replica count it should have, with the reason.

Each load sample asks for a raw count:
- `waiting` (default): the replicas its running requests fill (`running / slots`, rounded up)
  plus one per `target` requests waiting (in the engines' queues, or held by gateways);
- `running`: one per `target` requests, running or waiting;
- `kv`: the KV-cache usage summed over replicas, over `target` (a fraction).

Stabilisation as Kubernetes' HPA does it: the count rises only to what every sample of the last
`up_window` seconds asked for (their minimum: a spike shorter than the window adds nothing), and
falls only to what some sample of the last `down_window` asked for (their maximum: a lull shorter
than the window removes nothing). To zero only after `idle_to_zero` seconds without a request
while a replica was ready; from zero at once when a request is held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from llmcell.protocol.autoscaling import ScalingPolicy


@dataclass(frozen=True)
class LoadSample:
    at: float
    """Monotonic seconds."""
    replicas: int
    """Ready replicas when it was taken."""
    running: int = 0
    waiting: int = 0
    held: int = 0
    """Requests gateways hold for the model (it has no ready replica)."""
    kv_usage: float = 0.0
    """KV-cache usage summed over the ready replicas (each 0-1)."""
    slots: int = 0
    """Requests one replica runs at once (0: unknown)."""

    @property
    def busy(self) -> bool:
        return self.running + self.waiting + self.held > 0


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str


def wanted(policy: ScalingPolicy, s: LoadSample) -> int:
    """The raw replica count one sample asks for (before windows and bounds)."""
    queued = s.waiting + s.held
    if policy.metric == "running":
        return math.ceil((s.running + queued) / policy.target)
    if policy.metric == "kv":
        return math.ceil(s.kv_usage / policy.target) + (1 if s.held and not s.replicas else 0)
    filled = math.ceil(s.running / s.slots) if s.slots else min(s.running, 1)
    return filled + math.ceil(queued / policy.target)


def decide(policy: ScalingPolicy, samples: Sequence[LoadSample], current: int,
           now: float) -> Decision:
    """The replica count to have now, given the samples so far (oldest first) and the current
    desired count."""
    if not samples:
        return Decision(policy.clamp(current), "no load reported yet")
    last = samples[-1]
    if current == 0:
        if last.held or last.busy:
            return Decision(max(1, policy.clamp(wanted(policy, last))),
                            f"scale from zero: {last.held + last.waiting} requests held")
        return Decision(0, "idle at zero")
    up = [wanted(policy, s) for s in samples if now - s.at <= policy.up_window]
    down = [wanted(policy, s) for s in samples if now - s.at <= policy.down_window]
    covered_up = now - samples[0].at >= policy.up_window
    covered_down = now - samples[0].at >= policy.down_window
    raw = wanted(policy, last)
    if raw > current and covered_up and min(up) > current:
        target = policy.clamp(min(up))
        note = f" (capped at max_replicas {policy.max_replicas})" \
            if min(up) > policy.max_replicas else ""
        if target > current:
            return Decision(target, f"scale up: the last {policy.up_window:g} s asked for "
                                    f"{min(up)} or more ({_load(policy, last)}){note}")
    if raw < current and covered_down and max(down) < current:
        target = policy.clamp(max(down))
        if target == 0 and policy.min_replicas == 0:
            # the idle clock runs from the last request, or from when a replica was ready
            # (a model still loading its first replica is not idle)
            active = [s for s in samples if s.busy or s.replicas == 0]
            since = now - (active[-1].at if active else samples[0].at)
            if since < policy.idle_to_zero:
                target = 1
                if current == 1:
                    return Decision(1, f"idle {since:.0f} s of {policy.idle_to_zero:g} s "
                                       "before scaling to zero")
            else:
                return Decision(0, f"scale to zero: no request for {since:.0f} s")
        if target < current:
            return Decision(target, f"scale down: the last {policy.down_window:g} s asked for "
                                    f"at most {max(down)} ({_load(policy, last)})")
    bounded = policy.clamp(current)
    if bounded != current:
        return Decision(bounded, f"within [{policy.min_replicas}, {policy.max_replicas}]")
    return Decision(current, "steady")


def _load(policy: ScalingPolicy, s: LoadSample) -> str:
    if policy.metric == "kv":
        return f"KV usage {s.kv_usage:.2f} over {s.replicas} replicas, target {policy.target:g}"
    return (f"{s.running} running, {s.waiting + s.held} waiting over {s.replicas} replicas, "
            f"target {policy.target:g}")


def trim(samples: list[LoadSample], policy: ScalingPolicy, now: float) -> list[LoadSample]:
    """The samples any decision from now on can still use (the longest window back, and the last
    busy one while the idle clock runs)."""
    keep = max(policy.up_window, policy.down_window, policy.idle_to_zero) + 1
    return [s for s in samples if now - s.at <= keep]
