"""`llmcell up`: the whole cell on one machine, as separate processes exactly as in Kubernetes.

Starts the admin, N model servers that join it (CPU threads split between them) and the gateway,
publishes the default model with one replica, waits until it serves, and prints the URLs and
example calls. Ctrl-C (or SIGTERM) stops every process, servers first so they drain.

Once the cell serves, a process that exits is restarted, as Kubernetes' `restartPolicy: Always`
does: after 1 s, then 2, 4, ... up to 30 s while it keeps failing (the count starts again once a
process has run for a minute). A model-server group restarts whole, since its collectives need
every member. A restarted server rejoins the admin under its id and is given its replicas again;
the admin's state is on disk, and the gateway re-reads the routes. A failure while starting still
stops the cell with the reason, rather than retrying a bad model or a port in use.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmcell.config.security import ENV as CELL_TOKEN_ENV
from llmcell.engine.cpu_share import usable_cpus
from llmcell.up_usage import auth_note, usage


@dataclass(frozen=True)
class CellPlan:
    servers: int = 1
    host: str = "127.0.0.1"
    gateway_port: int = 8888
    admin_port: int = 10000
    model: str = "smollm2-135m-instruct"
    sax_name: str = "/sax/test/smollm2"
    replicas: int = 1
    state_path: Path = Path("admin.sqlite3")
    kv_cache_memory: int = 512 << 20
    server_memory: int = 4 << 30
    policy: str = "least_load"
    threads: int = 0
    group_size: int = 1
    """Processes per model server (a tensor-parallel group: 1 leader + workers)."""
    drain_timeout: float = 5.0
    """Seconds the servers finish running requests when the cell stops (Ctrl-C): short, since
    someone is waiting at the terminal; a Kubernetes pod drains for 30 s."""
    lora: tuple[tuple[str, str], ...] = ()
    """(Sax name, PEFT directory) of LoRA adapters published on the model (their folders
    become the admin's model roots)."""
    auth: bool = False
    """A cell credential for the members (a file beside the state, made once) and API keys on
    the gateway; an admin key is made and printed at start."""

    @property
    def token_path(self) -> Path:
        return self.state_path.with_suffix(".cell-token")

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise ValueError(f"servers={self.servers} must be >= 1")
        if self.replicas < 1:
            raise ValueError(f"replicas={self.replicas} must be >= 1")
        if not 0 <= self.drain_timeout <= 3600:
            raise ValueError(f"drain_timeout={self.drain_timeout} must be in [0, 3600] seconds")
        if not 1 <= self.group_size <= 16:
            raise ValueError(f"group_size={self.group_size} must be between 1 and 16")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _PortPicker:
    """Free ports that are not already promised to another process of this cell; `pair()` gives
    P with P + 1 free too (a group's rendezvous uses both)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.taken: set[int] = set()

    def one(self) -> int:
        while True:
            port = free_port(self.host)
            if port not in self.taken:
                self.taken.add(port)
                return port

    def pair(self) -> int:
        while True:
            port = self.one()
            if port + 1 in self.taken:
                continue
            try:
                with socket.socket() as s:
                    s.bind((self.host, port + 1))
            except OSError:
                continue
            self.taken.add(port + 1)
            return port


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f}s")


FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # seconds before a restart, doubling while it fails
STABLE_AFTER = 60.0  # a process that ran this long starts its back-off again from the first


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a unit that has failed `failures` times in a row before
    this failure (0 for the first)."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(failures, 16))


@dataclass
class _Unit:
    """Processes started, failed and restarted together: one process, or a model-server group
    (workers first, then the leader, which waits for them)."""
    name: str
    members: list[tuple[str, tuple[str, ...]]]  # (process name, `llmcell` arguments)
    procs: list[subprocess.Popen] = field(default_factory=list)
    started: float = 0.0
    failures: int = 0  # in a row, each within STABLE_AFTER of its start
    restart_at: float | None = None

    def exited(self) -> tuple[str, int] | None:
        for (name, _), proc in zip(self.members, self.procs):
            if proc.poll() is not None:
                return name, proc.returncode
        return None


def _terminate(procs: list[subprocess.Popen], timeout: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalCell:
    def __init__(self, plan: CellPlan) -> None:
        self.plan = plan
        self.units: list[_Unit] = []
        self.admin_url = f"http://{plan.host}:{plan.admin_port}"
        self.gateway_url = f"http://{plan.host}:{plan.gateway_port}"
        self.token = _cell_token(plan.token_path) if plan.auth else None
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.env = dict(os.environ, **({CELL_TOKEN_ENV: self.token} if self.token else {}))
        """The members' environment: the credential travels there, not on a command line."""
        self.admin_key: str | None = None

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        return [(name, proc) for unit in self.units
                for (name, _), proc in zip(unit.members, unit.procs)]

    def _launch(self, unit: _Unit) -> None:
        unit.procs = [subprocess.Popen([sys.executable, "-m", "llmcell.cli", *args], env=self.env)
                      for _, args in unit.members]
        unit.started = time.monotonic()

    def _spawn(self, name: str, *members: tuple[str, tuple[str, ...]]) -> subprocess.Popen:
        """Start a unit; returns its last process (a group's leader)."""
        unit = _Unit(name, list(members))
        self.units.append(unit)
        self._launch(unit)
        return unit.procs[-1]

    def start(self, say=print) -> None:
        p = self.plan
        cores = p.threads or usable_cpus()
        per_server = max(1, cores // (p.servers * p.group_size))
        admin = self._spawn("admin", ("admin", (
            "admin", "--host", p.host, "--port", str(p.admin_port), "--state", str(p.state_path),
            "--kv-reserve", str(p.kv_cache_memory), "--batch-gateway", self.gateway_url,
            *[arg for _, path in p.lora
              for arg in ("--model-root", str(Path(path).resolve().parent))])))
        _wait(self.admin_url + "/health", admin, "the admin")
        say(f"admin    {self.admin_url}  (state: {p.state_path})")
        if self.token:
            r = httpx.post(self.admin_url + "/keys", json={"tenant": "admin", "role": "admin"},
                           headers=self.headers, timeout=10.0)
            r.raise_for_status()
            self.admin_key = r.json()["key"]
        ports = _PortPicker(p.host)
        ports.taken |= {p.admin_port, p.gateway_port}
        for i in range(p.servers):
            port = ports.one()
            group: tuple[str, ...] = ()
            members = []
            if p.group_size > 1:  # workers first: the leader waits for them at the rendezvous
                group = ("--group-size", str(p.group_size), "--group-leader", p.host,
                         "--group-port", str(ports.pair()))
                members = [(f"worker-{i}-{rank}", (
                    "server", *group, "--group-rank", str(rank), "--port", str(ports.one()),
                    "--threads", str(per_server), "--kv-cache-memory", str(p.kv_cache_memory)))
                    for rank in range(1, p.group_size)]
            members.append((f"server-{i}", (
                "server", "--admin", self.admin_url, "--host", p.host, "--port", str(port),
                "--server-id", f"server-{i}", "--memory", str(p.server_memory), "--threads",
                str(per_server), "--kv-cache-memory", str(p.kv_cache_memory),
                "--drain-timeout", str(p.drain_timeout), *group,
                *(("--group-rank", "0") if group else ()))))
            self._spawn(f"server-{i}", *members)
            shape = (f", a group of {p.group_size} processes" if p.group_size > 1 else "")
            say(f"server-{i} http://{p.host}:{port}  ({per_server} CPU threads{shape})")
        gateway = self._spawn("gateway", ("gateway", (
            "gateway", "--admin", self.admin_url, "--host", p.host, "--port", str(p.gateway_port),
            "--policy", p.policy, "--drain-timeout", str(p.drain_timeout))))
        _wait(self.gateway_url + "/health", gateway, "the gateway")
        say(f"gateway  {self.gateway_url}")
        self.publish(say)

    def publish(self, say=print) -> None:
        p = self.plan
        listed = httpx.get(f"{self.admin_url}/models{p.sax_name}", timeout=10.0,
                           headers=self.headers)
        spec = {"model": p.sax_name, "model_path": p.model, "checkpoint": "None",
                "replicas": p.replicas}
        saved = listed.json() if listed.status_code == 200 else None
        if saved is not None and saved.get("model_path") != p.model:  # the flags win
            say(f"{p.sax_name}: the saved state serves {saved.get('model_path')}; "
                f"republishing it with {p.model}")
            self._sax("POST", "/unpublish", {"model": p.sax_name})
            saved = None
        if saved is None:
            self._sax("POST", "/publish", spec)
        elif saved.get("max_replicas") != p.replicas:
            say(f"{p.sax_name}: the saved state has {saved.get('max_replicas')} replica(s); "
                f"updating it to {p.replicas}")
            self._sax("PUT", "/update", spec)
        say(f"published {p.sax_name} ({p.model}, {p.replicas} replica(s)); loading...")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            self.check_alive()
            cell = httpx.get(f"{self.admin_url}/models{p.sax_name}", timeout=10.0,
                             headers=self.headers).json()
            seen = httpx.get(self.gateway_url + "/health", timeout=10.0).json()["models"]
            if cell.get("active_replicas", 0) >= 1 and seen.get(p.sax_name, 0) >= 1:
                say(f"{p.sax_name}: {cell['active_replicas']} of {cell['max_replicas']} "
                    "replica(s) active")
                self.publish_adapters(say)
                return
            time.sleep(0.2)
        raise TimeoutError(f"{p.sax_name} had no active replica after 300s")

    def publish_adapters(self, say=print) -> None:
        p = self.plan
        for name, path in p.lora:
            spec = {"model": name, "model_path": str(Path(path).resolve()), "checkpoint": "None",
                    "replicas": p.replicas, "base": p.sax_name}
            listed = httpx.get(f"{self.admin_url}/models{name}", timeout=10.0,
                               headers=self.headers)
            self._sax("PUT" if listed.status_code == 200 else "POST",
                      "/update" if listed.status_code == 200 else "/publish", spec)
            say(f"published LoRA adapter {name} ({path}) on {p.sax_name}")

    def _sax(self, method: str, path: str, body: dict) -> None:
        r = httpx.request(method, self.gateway_url + path, json=body, timeout=60.0,
                          headers=self.headers)
        if r.status_code != 200:
            raise RuntimeError(f"{path} of {body['model']} failed: {r.text}")

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def supervise(self, now: float, say=print) -> None:
        """One round of supervision (see the module's docstring): a unit with a process that
        exited is stopped whole and restarted after its back-off."""
        for unit in self.units:
            if unit.restart_at is not None:
                if now >= unit.restart_at:
                    unit.restart_at = None
                    self._launch(unit)
                    say(f"{unit.name}: restarted")
                continue
            exited = unit.exited()
            if exited is None:
                continue
            if now - unit.started >= STABLE_AFTER:
                unit.failures = 0
            delay = restart_delay(unit.failures)
            unit.failures += 1
            whole = f" (the whole group of {len(unit.procs)})" if len(unit.procs) > 1 else ""
            say(f"{exited[0]} exited with status {exited[1]}; restarting {unit.name}{whole} in "
                f"{delay:.0f}s")
            _terminate(unit.procs, timeout=10)  # a group without a member cannot serve
            unit.restart_at = now + delay

    def stop(self) -> None:
        """The gateway first (no new work), then the servers (they drain; a group's leader
        stops its workers), then any worker left, then the admin."""
        for stage in ("gateway", "server", "worker", "admin"):
            _terminate([proc for name, proc in self.procs if name.startswith(stage)],
                       timeout=self.plan.drain_timeout + 10)


def _cell_token(path: Path) -> str:
    """The cell credential kept at `path` (owner-only), made the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def run(plan: CellPlan) -> int:
    cell = LocalCell(plan)

    def on_signal(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"llmcell up: {line}", flush=True)

    try:
        cell.start(say)
        print(f"llmcell up: ready in {time.monotonic() - started:.1f}s", flush=True)
        print(usage(cell.gateway_url, plan.sax_name, cell.admin_url, plan.auth), flush=True)
        print(auth_note(cell.admin_key, plan.token_path) + "\n", flush=True)
        while True:
            cell.supervise(time.monotonic(), say)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as e:
        print(f"llmcell up: {e}", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C now must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cell.stop()
        return 1
    print("llmcell up: stopping...", flush=True)
    cell.stop()
    return 0
