"""Engine configuration: what model to load, how to hold it, and how the scheduler may spend memory.

Built once (by the CLI, a server or a test) and passed down to the engine; nothing below reads the
environment. Every invalid value raises ValueError naming the field and the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATIONS = (None, "int8", "int8_dense")
ATTENTION_BACKENDS = ("auto", "native", "torch")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EngineConfig:
    model: str = "smollm2-135m-instruct"
    """A built-in alias, a GGUF file, or a Hugging Face model directory."""
    dtype: str = "auto"
    """Activation/weight dtype; "auto" is bfloat16 on CPU and CUDA."""
    quantization: str | None = None
    """None (weights in `dtype`), "int8" (weight-only, per-channel scales: 1 byte a parameter) or
    "int8_dense" (int8 for steps of under 8 rows, a dense copy in `dtype` for larger ones)."""
    device: str = "cpu"
    threads: int = 0
    """Intra-op threads; 0 sizes them to the CPUs the process may use (its affinity, capped by
    the cgroup's CPU quota: a pod's CPU limit)."""
    block_size: int = 16
    kv_cache_memory: int = 2 << 30
    """Bytes for the paged KV cache (all layers, K and V)."""
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 512
    """Token budget per step; a long prompt is prefilled in chunks of at most this size."""
    max_model_len: int = 0
    """Longest sequence (prompt + output); 0 takes the model's context length."""
    enable_prefix_caching: bool = True
    step_hold_ms: float = 10.0
    """The most the engine holds a step for requests about to come, and at most 2% of a step:
    after a step that finished requests, for the requests that replace them; and a lone request
    at an idle engine, for the rest of a possible burst. 0 turns both holds off."""
    seed: int = 0
    attention_backend: str = "auto"
    """Decode attention: "native" (a C++ kernel reading the paged cache in place; CPU, any dtype),
    "torch" (gather + scaled_dot_product_attention), "auto" (native where it applies and builds)."""
    omp_spin_count: int = 3000
    """How long an idle OpenMP thread spins before it sleeps (`GOMP_SPINCOUNT`, set where the
    engine starts torch unless the environment sets it or `OMP_WAIT_POLICY`). libgomp's default
    (300,000) burns a core at every barrier while a sibling is preempted by a co-tenant; 0 keeps
    the runtime's default."""
    weight_cache_dir: str | None = field(default_factory=lambda: default_weight_cache_dir())
    """Where a GGUF file's dequantized weights are kept between starts (about 4 bytes per
    parameter; the first start writes them). None: dequantize at every start."""
    model_key_file: str | None = None
    """The master key of an encrypted model file (`llmcell keys encrypt-model`): decrypted in
    memory, never cached or written in the clear."""
    max_loras: int = 4
    """LoRA adapters resident at once (loaded on demand, least recently used evicted; requests
    for more wait)."""
    max_lora_rank: int = 16
    """Highest LoRA rank served (an adapter above it is refused). A step with adapters costs
    about `max_loras * max_lora_rank` extra columns per projection, whatever the ranks used."""
    show_progress: bool = False
    """Print a loading progress bar (to stderr) while weights load."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must name an alias, a GGUF file or a model directory")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {DTYPES}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization={self.quantization!r} is not one of {QUANTIZATIONS}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device={self.device!r} is not 'cpu', 'cuda' or 'cuda:N'")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend={self.attention_backend!r} is not one of "
                             f"{ATTENTION_BACKENDS}")
        _positive("block_size", self.block_size)
        _positive("kv_cache_memory", self.kv_cache_memory)
        _positive("max_num_seqs", self.max_num_seqs)
        _positive("max_num_batched_tokens", self.max_num_batched_tokens)
        _positive("max_loras", self.max_loras)
        _positive("max_lora_rank", self.max_lora_rank)
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0 (0 means the usable CPUs)")
        if not isinstance(self.omp_spin_count, int) or self.omp_spin_count < 0:
            raise ValueError(f"omp_spin_count={self.omp_spin_count!r} must be an integer >= 0")
        if not isinstance(self.step_hold_ms, (int, float)) or isinstance(
                self.step_hold_ms, bool) or not 0 <= self.step_hold_ms <= 1000:
            raise ValueError(f"step_hold_ms={self.step_hold_ms!r} must be a number of "
                             f"milliseconds in [0, 1000]")
        if self.max_model_len < 0:
            raise ValueError(f"max_model_len={self.max_model_len} must be >= 0")

    @property
    def resolved_dtype(self) -> str:
        return "bfloat16" if self.dtype == "auto" else self.dtype


def default_weight_cache_dir() -> str:
    """$XDG_CACHE_HOME/llmcell/weights, else ~/.cache/llmcell/weights."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "llmcell" / "weights")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
