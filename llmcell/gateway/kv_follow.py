"""KV-aware routing at the gateway: follow each replica's prefix-cache events, tokenize a request
as its model's servers do, and tell the policy how much of its prompt each replica caches.

For every replica in the routing view one task long-polls its server's `GET /cell/kv_events`
(server/prefix_routes.py) and applies what comes to the model's `KVIndex` (router/kv_index.py);
a replica that leaves the view is forgotten, and one whose server restarts comes back under a new
epoch. Each model's tokenizer and chat template are fetched once from one of its servers
(`GET /cell/tokenizer`) and again when the model's checkpoint changes. `cached(model, ...)` is
None (the policy then routes by prefix hash) while the gateway has no tokenizer for the model,
the prompt cannot be rendered, or no replica was heard from within `STALE_AFTER` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import httpx
from prometheus_client.core import GaugeMetricFamily

from llmcell.gateway.view import CellView
from llmcell.protocol.cell import WireError
from llmcell.protocol.kv_events import HASH_SCHEME, KVEventBatch, prompt_block_keys
from llmcell.protocol.lora import cache_root
from llmcell.router.kv_index import KVIndex
from llmcell.tokenizer.chat_template import ChatTemplateError
from llmcell.tokenizer.prompts import chat_prompt_ids, completion_prompt_ids
from llmcell.tokenizer.tokenizer import Tokenizer

WAIT = 5.0
"""Seconds a long poll waits at the server for a change."""
STALE_AFTER = 3 * WAIT
"""A replica not heard from for this long is left out of the counts."""
RETRY = 2.0
"""Seconds before a failed poll or tokenizer fetch is tried again."""
MAX_PROMPT_BLOCKS = 4096


class KVFollower:
    def __init__(self, view: CellView, client: httpx.AsyncClient,
                 on_outcome: Callable[[str, str], None] = lambda model, outcome: None,
                 component: str = "gateway") -> None:
        """`client`: the gateway's client for replicas (the cell credential, its CA).
        `on_outcome(model, outcome)`: each routing lookup's outcome (`cached`: some replica holds
        part of the prompt, `uncached`: none does, `unknown`: no index or tokenizer).
        `component`: its metrics' prefix (`llmcell:<component>_kv_index_blocks`)."""
        self.component = component
        self.view = view
        self.client = client
        self.on_outcome = on_outcome
        self.indexes: dict[str, KVIndex] = {}
        self.tokenizers: dict[str, tuple[str, Tokenizer]] = {}
        """By model: (the checkpoint it was fetched for, the tokenizer)."""
        self._polls: dict[tuple[str, str], asyncio.Task] = {}
        self._fetches: dict[str, asyncio.Task] = {}

    # ---- routing ---------------------------------------------------------------------------------
    def cached(self, model: str, request, chat: bool) -> dict[str, int] | None:
        """Per replica, the prompt's leading tokens its cache holds; None: route by hash.
        `request`: the parsed OpenAI request (its messages, or its one prompt)."""
        counts = self._cached(model, request, chat)
        outcome = "unknown" if counts is None else "cached" if any(counts.values()) else "uncached"
        self.on_outcome(model, outcome)
        return counts

    def _cached(self, model: str, request, chat: bool) -> dict[str, int] | None:
        found = self.tokenizers.get(model)
        if found is None or found[0] != self.view.view.checkpoints.get(model, ""):
            self._fetch_tokenizer(model)
            if found is None:
                return None
        index = self.indexes.get(model)
        if index is None or not index.replicas:
            return None
        tk = found[1]
        try:
            if chat:
                ids = chat_prompt_ids(tk, request.messages, request.add_generation_prompt,
                                      request.tool_dicts())
            elif len(request.prompts) == 1:
                ids = completion_prompt_ids(tk, request.prompts[0])
            else:
                return None
        except ChatTemplateError:
            return None  # the server will refuse it with a 400 of its own
        root = cache_root(model if model in self.view.view.bases else None)  # an adapter's own
        counts = index.cached_tokens(
            lambda size: prompt_block_keys(ids, size, MAX_PROMPT_BLOCKS, root),
            time.monotonic(), STALE_AFTER)
        return counts or None

    # ---- following the view ----------------------------------------------------------------------
    async def follow(self, interval: float) -> None:
        while True:
            self.sync()
            await asyncio.sleep(interval)

    def sync(self) -> None:
        """One poll task per replica in the view; forget the replicas that left it."""
        live = {(model, r.server_id): r.address
                for model, replicas in self.view.view.models.items() for r in replicas}
        for key in [k for k in self._polls if k not in live]:
            self._polls.pop(key).cancel()
        for model, index in list(self.indexes.items()):
            index.retain(sid for m, sid in live if m == model)
            if model not in self.view.view.models:
                del self.indexes[model]
                self.tokenizers.pop(model, None)
        for model in self.view.view.models:
            found = self.tokenizers.get(model)
            if found is None or found[0] != self.view.view.checkpoints.get(model, ""):
                self._fetch_tokenizer(model)
        for (model, server_id), address in live.items():
            task = self._polls.get((model, server_id))
            if task is None or task.done():
                self._polls[(model, server_id)] = asyncio.create_task(
                    self._poll(model, server_id, address))

    async def _poll(self, model: str, server_id: str, address: str) -> None:
        index = self.indexes.setdefault(model, KVIndex())
        epoch, since = "", 0
        while True:
            try:
                r = await self.client.get(address + "/cell/kv_events", params={
                    "model": model, "since": since, "epoch": epoch, "wait": WAIT},
                    timeout=WAIT + 5.0)
                if r.status_code == 404:
                    index.drop(server_id)  # an external engine, or still loading: ask later
                    await asyncio.sleep(10 * RETRY)
                    continue
                r.raise_for_status()
                batch = KVEventBatch.from_json(r.json())
            except (httpx.HTTPError, ValueError, WireError):
                await asyncio.sleep(RETRY)
                continue
            if index.apply(server_id, batch, time.monotonic()):
                epoch, since = batch.epoch, batch.seq
            else:
                epoch, since = "", 0  # out of order: start again from a snapshot

    def _fetch_tokenizer(self, model: str) -> None:
        task = self._fetches.get(model)
        if task is None or task.done():
            self._fetches[model] = asyncio.create_task(self._tokenizer(model))

    async def _tokenizer(self, model: str) -> None:
        checkpoint = self.view.view.checkpoints.get(model, "")
        for replica in self.view.view.models.get(model, []):
            try:
                r = await self.client.get(replica.address + "/cell/tokenizer",
                                          params={"model": model}, timeout=30.0)
                if r.status_code != 200:
                    continue
                data = r.json()
                if data.get("hash_scheme") != HASH_SCHEME:
                    return
                tk = await asyncio.to_thread(Tokenizer.from_spec, data["tokenizer"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            self.tokenizers[model] = (checkpoint, tk)
            return
        await asyncio.sleep(RETRY)  # none answered: the next lookup tries again after this

    def collect(self):
        """Prometheus: the blocks each followed replica holds, and whether each model's tokenizer
        is here (a custom collector, read at scrape time)."""
        blocks = GaugeMetricFamily(f"llmcell:{self.component}_kv_index_blocks",
                                   "Prompt blocks each replica's prefix cache holds, as this "
                                   "index has it (kv_affinity).", labels=["model", "replica"])
        for model, index in sorted(self.indexes.items()):
            for replica, entry in sorted(index.replicas.items()):
                blocks.add_metric([model, replica], len(entry.keys))
        loaded = GaugeMetricFamily(f"llmcell:{self.component}_kv_tokenizer_loaded",
                                   "1 when the model's tokenizer is here (kv_affinity can route "
                                   "it).", labels=["model"])
        for model in sorted(self.view.view.models):
            loaded.add_metric([model], float(model in self.tokenizers))
        return [blocks, loaded]

    async def aclose(self) -> None:
        for task in [*self._polls.values(), *self._fetches.values()]:
            task.cancel()
