"""A LoRA adapter as a served model: requests for its name run on the built-in engine of its base
model (held by this server) with the adapter's weights, which the engine loads on demand.

The admin assigns an adapter only to servers it assigned the base; starting waits for the base to
be ready, then runs one token with the adapter, so a directory that does not fit the base fails
here (reported to the admin) rather than on a user's request.
"""

from __future__ import annotations

import asyncio
import time

from llmcell.protocol.cell import Assignment
from llmcell.protocol.lora import AdapterRef
from llmcell.protocol.openai import ChatRequest, CompletionRequest
from llmcell.server.backend import Load, PrefixCacheSource, Reply
from llmcell.server.host import ModelHost


class AdapterBackend:
    def __init__(self, assignment: Assignment, host: ModelHost, base_timeout: float) -> None:
        self.model_name = assignment.model
        self.source = assignment.model_path
        """Its card's `root` (the adapter directory)."""
        self.parent = assignment.base
        self.ref = AdapterRef(assignment.model, assignment.model_path)
        self._host = host
        self._timeout = base_timeout
        self._base = None
        self._ready = False

    @property
    def max_model_len(self) -> int:
        return 0 if self._base is None else self._base.max_model_len

    async def start(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            base = self._host.backends.get(self.parent)
            if base is not None and base.load().ready:
                break
            if time.monotonic() > deadline:
                raise ValueError(f"its base model {self.parent} is not ready on this server "
                                 f"after {self._timeout:.0f} s")
            await asyncio.sleep(0.1)
        if not hasattr(base, "warm_adapter"):
            raise ValueError(f"LoRA adapters need the built-in engine; {self.parent} is served "
                             "by an external engine")
        await base.warm_adapter(self.ref)
        self._base = base
        self._ready = True

    async def stop(self) -> None:
        self._ready = False

    def _serving(self):
        base = self._base
        if base is None or self._host.backends.get(self.parent) is not base:
            from llmcell.protocol.errors import APIError

            raise APIError(503, f"the base model {self.parent} of {self.model_name} is not "
                                "served here now; retry", headers={"Retry-After": "1"})
        return base

    def load(self) -> Load:
        if self._base is None:
            return Load(0, 0, 0.0, False)
        load = self._base.load()
        return Load(load.running, load.waiting, load.kv_cache_usage, self._ready and load.ready,
                    load.slots)

    def resident(self) -> bool:
        return self._base is not None and self._base.adapter_resident(self.model_name)

    async def chat(self, req: ChatRequest, raw: dict) -> Reply:
        return await self._serving().chat(req, raw, self.ref)

    async def complete(self, req: CompletionRequest, raw: dict) -> Reply:
        return await self._serving().complete(req, raw, self.ref)

    async def tokenize(self, raw: dict) -> Reply:
        return await self._serving().tokenize(raw)

    async def detokenize(self, raw: dict) -> Reply:
        return await self._serving().detokenize(raw)

    def prefix_cache(self) -> PrefixCacheSource | None:
        """The base engine's: its blocks are among them, keyed from the adapter's own root
        (the gateways compute its prompts' keys from that root)."""
        return None if self._base is None else self._base.prefix_cache()
