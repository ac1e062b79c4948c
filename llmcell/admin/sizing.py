"""How much memory a replica needs: weights at the runtime dtype plus a KV-cache reserve.

Publishing validates the model source here (it must exist and be readable as GGUF or a Hugging
Face safetensors directory) and counts its parameters from the file headers alone.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from llmcell.encryption import decrypt_file, is_encrypted
from llmcell.engine.loader.gguf_file import GGUFFile
from llmcell.engine.loader.registry import MODEL_ALIASES, resolve_model_path


@dataclass(frozen=True)
class ModelSize:
    source: Path
    params: int
    memory_bytes: int


def count_params(path: Path, key: bytes | None = None) -> int:
    """Parameters of a model source, from its headers (an encrypted file's: with `key`)."""
    if is_encrypted(path):
        if key is None:
            raise ValueError(f"{path} is encrypted: the admin needs its master key "
                             "(--model-key-file) to size it")
        data = decrypt_file(path, key)
        return sum(math.prod(t.shape) for t in GGUFFile(path, data).tensors.values())
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{path}: a Hugging Face directory needs *.safetensors weights")
        total = 0
        for f in files:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
        return total
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file or a Hugging Face model directory")
    return sum(math.prod(t.shape) for t in GGUFFile(path).tensors.values())


def replica_size(model_path: str, checkpoint: str, bytes_per_param: float,
                 kv_reserve_bytes: int, key: bytes | None = None) -> ModelSize:
    """Raises ValueError naming the source when it does not exist or cannot be read."""
    source = resolve_model_path(model_path if checkpoint == "None" else checkpoint)
    params = count_params(source, key)
    return ModelSize(source, params, int(params * bytes_per_param) + kv_reserve_bytes)


def under_roots(source: str, roots: tuple[str, ...]) -> bool:
    """Whether a model source may be read: a built-in alias (or its file), or a path that
    resolves (symbolic links followed) under one of `roots`. Nothing is read to decide, so the
    answer says nothing about what exists outside them."""
    if source.lower() in MODEL_ALIASES:
        return True
    try:
        path = Path(source).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a name no file can have
        return False
    allowed = [Path(r).expanduser().resolve() for r in roots]
    for alias in MODEL_ALIASES:
        try:
            allowed.append(resolve_model_path(alias))
        except ValueError:
            pass  # its package is not installed
    return any(path == root or path.is_relative_to(root) for root in allowed)
