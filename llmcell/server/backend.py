"""The contract between the HTTP layer and an engine: what a model server needs from a backend.

A backend answers validated OpenAI requests with either a JSON body or a stream of SSE bytes, and
reports its load. The built-in engine and an external OpenAI-compatible engine (vLLM, SGLang,
another llmcell server) both implement it, so routes never know which one they talk to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, Protocol

from llmcell.protocol.openai import ChatRequest, CompletionRequest

if TYPE_CHECKING:
    from llmcell.engine.kv_cache.event_log import KVEventLog
    from llmcell.tokenizer.tokenizer import Tokenizer


@dataclass(frozen=True)
class PrefixCacheSource:
    """What a gateway needs to route by the KV cache: the engine's prefix-cache keys as they
    change, and the tokenizer whose token ids the keys are made of."""

    events: "KVEventLog"
    tokenizer: "Tokenizer"


@dataclass(frozen=True)
class Load:
    """A backend's load as the router and autoscaler see it."""

    running: int
    waiting: int
    kv_cache_usage: float
    ready: bool
    slots: int = 0
    """Requests the engine runs at once (0: unknown)."""


@dataclass
class Reply:
    """A non-streaming answer (status + JSON) or a stream of SSE bytes. `close`, when given, runs
    once the stream is over however it ended (it releases what the stream holds, e.g. aborts an
    engine request submitted before the response began)."""

    status: int = 200
    body: dict | None = None
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], None] | None = None


class ModelBackend(Protocol):
    model_name: str
    max_model_len: int

    async def start(self) -> None:
        """Load or connect; after it returns, `load().ready` tells whether requests can run."""

    async def stop(self) -> None: ...

    def load(self) -> Load: ...

    async def chat(self, req: ChatRequest, raw: dict) -> Reply: ...

    async def complete(self, req: CompletionRequest, raw: dict) -> Reply: ...

    async def tokenize(self, raw: dict) -> Reply: ...

    async def detokenize(self, raw: dict) -> Reply: ...

    def prefix_cache(self) -> PrefixCacheSource | None:
        """The engine's prefix-cache keys and tokenizer (None: not known, an external engine, or
        not loaded yet)."""
