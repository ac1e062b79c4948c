"""A per-machine cache of dequantized GGUF weights, so that only the first start pays for them.

Dequantizing a GGUF file's Q4/Q5/Q6 blocks takes seconds on every start. The first load writes
the float tensors it produced (after the rotary permutation is undone) as one safetensors file,
keyed by the GGUF file's path, size and modification time and by `FORMAT` (bumped whenever the
loader's output changes); later loads map that file instead. A cache that cannot be read is
rebuilt, and one that cannot be written (or would leave its disk nearly full) is skipped with a
note: the cache never stops a load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = 1
FREE_MARGIN = 1 << 30
"""Free space left over on the cache's filesystem after a write (and the write needs twice the
weights' size free: the old entry can still be there while the new one is written)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prefix(source: Path) -> str:
    return f"{source.stem}-{_digest(str(source.resolve()))}"


def cache_file(cache_dir: Path, source: Path) -> Path:
    st = source.stat()
    version = _digest(f"{st.st_size}|{st.st_mtime_ns}|{FORMAT}")
    return cache_dir / f"{_prefix(source)}-{version}.safetensors"


def read(cache_dir: Path | None, source: Path) -> dict[str, torch.Tensor] | None:
    """The cached weights of `source`, or None when there are none (or they cannot be read)."""
    if cache_dir is None:
        return None
    path = cache_file(cache_dir, source)
    if not path.is_file():
        return None
    try:
        return load_file(path)
    except (OSError, SafetensorError, ValueError) as e:
        print(f"llmcell: ignoring an unreadable weight cache {path} ({e})", file=sys.stderr)
        return None


def write(cache_dir: Path | None, source: Path, weights: dict[str, torch.Tensor]) -> Path | None:
    """Store `weights` for `source` (atomically: a crash leaves no half file). Returns the path,
    or None when there is no cache or it cannot be written."""
    if cache_dir is None:
        return None
    path = cache_file(cache_dir, source)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    size = sum(t.numel() * t.element_size() for t in weights.values())
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
        if free < 2 * size + FREE_MARGIN:
            print(f"llmcell: not caching {size / 1e9:.1f} GB of dequantized weights in "
                  f"{cache_dir}: {free / 1e9:.1f} GB free", file=sys.stderr)
            return None
        for old in cache_dir.glob(f"{_prefix(source)}-*.safetensors"):  # this file, changed since
            old.unlink(missing_ok=True)
        save_file({k: v.contiguous() for k, v in weights.items()}, tmp)
        os.replace(tmp, path)
        return path
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        print(f"llmcell: not caching dequantized weights in {cache_dir} ({e})", file=sys.stderr)
        return None
