"""Build (once per machine, cached by torch under ~/.cache/torch_extensions) and load the native
CPU kernels. Returns None when they cannot be built here (no compiler, no ninja): callers then use
the PyTorch path, which gives the same results."""

from __future__ import annotations

import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

_LOCK = threading.Lock()
STALE_BUILD_LOCK_S = 300.0
"""A build takes about a minute; a lock this old was left by a process killed mid-build, and
torch would wait on it forever."""


def _clear_stale_lock(name: str) -> None:
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_BUILD_LOCK_S:
            lock.unlink()
            print(f"llmcell: removed a stale kernel build lock ({lock})", file=sys.stderr)
    except FileNotFoundError:
        pass


@lru_cache(maxsize=1)
def paged_attention_kernels():
    """The module with `paged_decode`, `paged_prefix` and `write_kv` (paged_attention.cpp)."""
    with _LOCK:
        try:
            from torch.utils.cpp_extension import load

            _clear_stale_lock("llmcell_paged_attention")
            source = Path(__file__).with_name("paged_attention.cpp")
            return load(name="llmcell_paged_attention", sources=[str(source)],
                        extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
                        extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as e:  # a missing toolchain must not stop the engine
            print(f"llmcell: native paged attention unavailable ({type(e).__name__}: {e}); "
                  "using the PyTorch path", file=sys.stderr)
            return None
