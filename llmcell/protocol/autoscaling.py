"""A model's autoscaling policy on the wire: given at publish or update (the Saxml body's
`autoscaling` object, the admin API's too), stored with the model, read by the admin's
autoscaler (admin/autoscaler.py).

    {"min_replicas": 0, "max_replicas": 4, "metric": "waiting", "target": 4,
     "up_window": 10, "down_window": 60, "idle_to_zero": 300}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

METRICS = ("waiting", "running", "kv")
"""waiting: requests waiting per replica beyond what its batch runs; running: requests per
replica (running and waiting); kv: the fraction of a replica's KV cache in use."""
MAX_REPLICAS = 1024


@dataclass(frozen=True)
class ScalingPolicy:
    min_replicas: int = 1
    max_replicas: int = 1
    metric: str = "waiting"
    target: float = 4.0
    """Per replica: waiting requests (waiting), requests (running), or a fraction 0-1 (kv)."""
    up_window: float = 10.0
    """Seconds the load must ask for more replicas before they are added (a spike shorter than
    this adds none)."""
    down_window: float = 60.0
    """Seconds the load must ask for fewer before replicas are removed."""
    idle_to_zero: float = 300.0
    """Seconds without a request before a model with min_replicas 0 goes to zero."""

    def __post_init__(self) -> None:
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= MAX_REPLICAS:
                raise ValueError(f"autoscaling.{name}={value!r} must be an integer in "
                                 f"[0, {MAX_REPLICAS}]")
        if self.max_replicas < 1:
            raise ValueError(f"autoscaling.max_replicas={self.max_replicas} must be >= 1")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"autoscaling.min_replicas={self.min_replicas} is above "
                             f"max_replicas={self.max_replicas}")
        if self.metric not in METRICS:
            raise ValueError(f"autoscaling.metric={self.metric!r} must be one of "
                             f"{', '.join(METRICS)}")
        for name in ("target", "up_window", "down_window", "idle_to_zero"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"autoscaling.{name}={value!r} must be a number")
        if self.target <= 0 or (self.metric == "kv" and self.target > 1):
            raise ValueError(f"autoscaling.target={self.target} must be > 0"
                             + (" and <= 1 for metric kv" if self.metric == "kv" else ""))
        if not 0 < self.up_window <= 3600 or not 0 < self.down_window <= 86400:
            raise ValueError(f"autoscaling windows must be > 0 (up_window={self.up_window} s "
                             f"at most 3600, down_window={self.down_window} s at most 86400)")
        if not 0 < self.idle_to_zero <= 7 * 86400:
            raise ValueError(f"autoscaling.idle_to_zero={self.idle_to_zero} must be in "
                             "(0, 604800] seconds")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "ScalingPolicy":
        """ValueError naming the field for anything that is not a policy."""
        if not isinstance(data, dict):
            raise ValueError(f"autoscaling must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"autoscaling has unknown field(s) {unknown}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**data)
