"""A model server's membership in a cell: register with the admin, heartbeat, and load or unload
replicas as the admin assigns them.

Each heartbeat carries the replicas this server holds (state and load); the reply lists what it
should hold. Heartbeats run on a thread of their own, with their own event loop and client: a
server whose request loop is saturated still reports on time (a busy server is not a dead one);
what the admin assigns is applied on the request loop. New assignments load in the background (state "loading", then "ready" or "failed"
with the reason); a replica no longer assigned leaves the routing table at once and is stopped
when its running requests finish. While the admin is unreachable the server keeps serving what it
holds and retries; if the admin forgot it (restart, or it was declared dead), it registers again
with what it holds, so nothing is reloaded.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from llmcell.config.server import ServerConfig
from llmcell.edge.admin_client import admin_client
from llmcell.protocol.cell import (FAILED, LOADING, READY, Assignment, ReplicaReport, ServerInfo)
from llmcell.server.backend import ModelBackend
from llmcell.server.host import ModelHost


@dataclass
class _Replica:
    assignment: Assignment
    backend: ModelBackend
    state: str = LOADING
    error: str = ""
    task: asyncio.Task | None = None


class CellAgent:
    def __init__(self, config: ServerConfig, host: ModelHost, address: str,
                 make_backend: Callable[[Assignment], ModelBackend]) -> None:
        self.config = config
        self.host = host
        self.make_backend = make_backend
        models = ("*",) if config.engine == "builtin" else (config.model_name,)
        self.info = ServerInfo(config.server_id or address, address, config.engine,
                               config.memory_bytes, config.group.size, models)
        self.replicas: dict[Assignment, _Replica] = {}
        self.interval = 1.0
        self.registered = False
        self.leaving = False
        """Shutting down: what it holds stays until the process exits (it drains), whatever
        the admin now assigns."""

    async def leave(self) -> None:
        """Tell the admin this server is going (SIGTERM: a drain, a spot preemption), so that
        its replicas are placed elsewhere now rather than after missed heartbeats."""
        self.leaving = True
        try:
            async with admin_client(self.config.security, self.config.admin, 2.0) as client:
                r = await client.post(f"/cell/servers/{self.info.id}/leaving")
                r.raise_for_status()
            print("llmcell server: told the admin this server is leaving; draining",
                  file=sys.stderr, flush=True)
        except httpx.HTTPError as e:  # its heartbeats will stop; the admin notices then
            print(f"llmcell server: could not tell the admin it is leaving ({e!r})",
                  file=sys.stderr, flush=True)

    def reports(self) -> list[dict]:
        out = []
        for r in list(self.replicas.values()):  # read on the heartbeat thread
            load = r.backend.load()
            resident = getattr(r.backend, "resident", None)
            out.append(ReplicaReport(r.assignment.model, r.assignment.model_path,
                                     r.assignment.checkpoint, r.state, r.error, load.running,
                                     load.waiting, r.backend.max_model_len,
                                     load.slots, load.kv_cache_usage, r.assignment.base,
                                     resident() if resident is not None else True).to_json())
        return out

    async def run(self) -> None:
        """Heartbeat until cancelled (from a thread of its own; see the module's doc)."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        thread = threading.Thread(target=asyncio.run, args=(self._beats(loop, stop),),
                                  name="llmcell-heartbeat", daemon=True)
        thread.start()
        try:
            await loop.create_future()  # until the server stops
        finally:
            stop.set()

    async def _beats(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        async with admin_client(self.config.security, self.config.admin, 5.0) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    wanted = await self._beat(client)
                    loop.call_soon_threadsafe(self.apply, wanted)
                except (httpx.HTTPError, ValueError) as e:
                    if self.registered:
                        print(f"llmcell server: admin unreachable ({type(e).__name__}); serving "
                              "what this server holds and retrying", file=sys.stderr, flush=True)
                    self.registered = False
                except RuntimeError:  # the request loop has closed: the server is stopping
                    return
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _beat(self, client: httpx.AsyncClient) -> tuple[Assignment, ...]:
        if not self.registered:
            r = await client.post("/cell/servers", json={
                "server": self.info.to_json(), "replicas": self.reports()})
            r.raise_for_status()
            data = r.json()
            self.interval = float(data.get("heartbeat_interval", self.interval))
            self.registered = True
            print(f"llmcell server: joined the cell at {self.config.admin} as {self.info.id}",
                  file=sys.stderr, flush=True)
        else:
            r = await client.post(f"/cell/servers/{self.info.id}/heartbeat",
                                  json={"replicas": self.reports()})
            if r.status_code == 404:
                self.registered = False
                return await self._beat(client)
            r.raise_for_status()
            data = r.json()
        return tuple(Assignment.from_json(a) for a in data.get("assignments", []))

    def apply(self, wanted: tuple[Assignment, ...]) -> None:
        if self.leaving:
            return
        for a in wanted:
            if a not in self.replicas:
                replica = _Replica(a, self.make_backend(a))
                replica.task = asyncio.create_task(self._load(replica))
                self.replicas[a] = replica
        for a in [a for a in self.replicas if a not in wanted]:
            replica = self.replicas.pop(a)
            asyncio.create_task(self._unload(replica))

    async def _load(self, replica: _Replica) -> None:
        a = replica.assignment
        print(f"llmcell server: loading {a.model} ({a.model_path}, checkpoint {a.checkpoint})",
              file=sys.stderr, flush=True)
        try:
            await replica.backend.start()
        except Exception as e:  # reported to the admin, which places the replica elsewhere
            replica.state, replica.error = FAILED, f"{type(e).__name__}: {e}"
            print(f"llmcell server: {a.model} failed to load: {replica.error}", file=sys.stderr,
                  flush=True)
            return
        replica.state = READY
        self.host.add(replica.backend)
        print(f"llmcell server: {a.model} ready", file=sys.stderr, flush=True)

    async def _unload(self, replica: _Replica) -> None:
        if replica.task is not None and not replica.task.done():
            replica.task.cancel()
        self.host.remove(replica.backend)
        deadline = time.monotonic() + self.config.drain_timeout
        while getattr(replica.backend, "in_flight", 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await replica.backend.stop()
        print(f"llmcell server: unloaded {replica.assignment.model}", file=sys.stderr, flush=True)
