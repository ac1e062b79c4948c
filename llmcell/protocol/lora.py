"""Naming a LoRA adapter on a request: which adapter of the served base model runs it.

The model server resolves a request's `model` to an adapter it was assigned and hands the engine
an `AdapterRef`; the engine loads the adapter from `path` on first use and keeps a bounded set
resident (engine/lora/). Requests of different adapters never share prefix-cache blocks: each
adapter's block keys start from its own root (`cache_root`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llmcell.protocol.kv_events import ROOT_KEY


@dataclass(frozen=True, slots=True)
class AdapterRef:
    name: str
    """The served name (a Sax model name such as /sax/test/sql)."""
    path: str
    """The PEFT adapter directory (adapter_config.json, adapter_model.safetensors)."""


def cache_root(adapter: str | None) -> int:
    """The parent key of a prompt's first prefix-cache block for `adapter` (None: the base).
    Stable across processes (not Python's salted str hash), so gateways agree with servers."""
    if adapter is None:
        return ROOT_KEY
    digest = hashlib.blake2b(adapter.encode(), digest_size=8).digest()
    return ROOT_KEY ^ int.from_bytes(digest, "big") >> 1
