"""Load-test configuration for `llmcell bench`: target, load shape, workload, report folder."""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = ("synthetic", "shared-prefix")


@dataclass(frozen=True)
class BenchConfig:
    url: str
    model: str
    num_requests: int = 100
    concurrency: int | None = 8
    rate: float | None = None
    """Poisson arrivals in requests/s; when set, `concurrency` is ignored."""
    dataset: str = "synthetic"
    """synthetic, shared-prefix, or the path of a JSONL file."""
    prompt_tokens: int = 256
    output_tokens: int = 128
    prefixes: int = 4
    prefix_tokens: int = 1000
    seed: int = 0
    output: str | None = None
    api_key: str | None = None
    timeout: float = 600.0
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url={self.url!r} must be an http(s) URL")
        if not 1 <= self.num_requests <= 1_000_000:
            raise ValueError(f"num_requests={self.num_requests} must be between 1 and 1000000")
        if self.rate is None and not (self.concurrency and 1 <= self.concurrency <= 10_000):
            raise ValueError(f"concurrency={self.concurrency} must be between 1 and 10000")
        if self.rate is not None and not 0 < self.rate <= 100_000:
            raise ValueError(f"rate={self.rate} must be > 0 requests/s")
        for name in ("prompt_tokens", "output_tokens", "prefixes", "prefix_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.timeout <= 0:
            raise ValueError(f"timeout={self.timeout} must be > 0 seconds")
