"""A cell of real processes for the benchmarks that need one (fairness.py, batch.py): the
members started with a fresh cell credential and an admin key, logs in a temporary folder,
every process stopped at the end; and the helpers they share (waiting for a URL, one streamed
request's TTFT, percentiles, saving a plot)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from llmcell.local_cell import free_port
from llmcell.protocol.auth import new_key

SAX = "/sax/test/smollm2"


def wait(url: str, timeout: float = 180.0, check=lambda r: r.status_code == 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check(httpx.get(url, timeout=2)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def port_url() -> tuple[int, str]:
    port = free_port("127.0.0.1")
    return port, f"http://127.0.0.1:{port}"


class BenchCell:
    """`with BenchCell() as cell:` start members with `cell.spawn(...)`; all stop on exit."""

    def __init__(self) -> None:
        self.admin_key = new_key()
        self.env = dict(os.environ, LLMCELL_CELL_TOKEN=new_key()[11:],
                        LLMCELL_ADMIN_KEY=self.admin_key)
        self.headers = {"Authorization": f"Bearer {self.admin_key}"}
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BenchCell":
        self._tmp = tempfile.TemporaryDirectory()
        self.logs = Path(self._tmp.name)
        return self

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "llmcell.cli", *args], env=self.env,
                                stdout=open(self.logs / f"{name}.log", "a"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def admin(self, *extra: str) -> str:
        port, url = port_url()
        self.spawn("admin", "admin", "--port", str(port), "--state",
                   str(self.logs / "admin.sqlite3"), "--kv-reserve", "256MiB", *extra)
        wait(url + "/health")
        return url

    def server(self, admin: str, slots: int, threads: int) -> None:
        self.spawn("server", "server", "--admin", admin, "--port",
                   str(free_port("127.0.0.1")), "--memory", "3GiB", "--max-num-seqs",
                   str(slots), "--threads", str(threads), "--kv-cache-memory", "512MiB",
                   "--max-model-len", "2048")

    def publish(self, gateway: str) -> None:
        """The default model, one replica, through `gateway`; back once it serves."""
        httpx.post(gateway + "/publish", headers=self.headers, timeout=60, json={
            "model": SAX, "model_path": "smollm2-135m-instruct", "checkpoint": "None",
            "replicas": 1}).raise_for_status()
        wait(gateway + "/health", 300, lambda r: r.json()["models"].get(SAX, 0) >= 1)

    def key(self, admin: str, tenant: str) -> str:
        return httpx.post(admin + "/keys", json={"tenant": tenant},
                          headers=self.headers).json()["key"]

    def __exit__(self, *exc) -> None:
        stop_all(self.procs, 30)
        self._tmp.cleanup()


def stop_all(procs: list[subprocess.Popen], timeout: float) -> None:
    """Terminate every process (the last started first), killing any still there after
    `timeout` seconds."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


async def stream_once(client: httpx.AsyncClient, key: str, prompt: str, max_tokens: int
                      ) -> tuple[float, int]:
    """(TTFT, output chunks) of one streamed chat request."""
    start = time.perf_counter()
    first, chunks = None, 0
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"content"' in line:
                chunks += 1
                if first is None:
                    first = time.perf_counter() - start
    return first if first is not None else time.perf_counter() - start, chunks


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def ttft_cdf(ax, ttfts: dict[str, list[float]], xlabel: str, ylabel: str, title: str) -> None:
    """Each condition's TTFTs (seconds) as a CDF in milliseconds, on a log axis."""
    for name, values in ttfts.items():
        xs = np.sort(np.asarray(values) * 1000)
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()


def save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def median_bars(medians: dict[str, float], title: str, out: Path) -> Path:
    """A bar per arm, labelled with its median tokens/s; saved as PNG to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(medians)
    ax.bar(names, [medians[n] for n in names], color=["#888", "#3a7", "#37a"][:len(names)])
    for i, n in enumerate(names):
        ax.text(i, medians[n], f"{medians[n]:.0f}", ha="center", va="bottom")
    ax.set_ylabel("tokens/s (median of rounds)")
    ax.set_title(title)
    return save(fig, out.parent, out.name)
