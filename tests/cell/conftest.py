"""A cell as real processes on loopback: admin, model servers, gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.server.conftest import free_port

SAX = "/sax/test/smollm2"
MODEL = "smollm2-135m-instruct"
HEARTBEAT = "0.3"


class Proc:
    def __init__(self, *args: str, port: int | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = env
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "llmcell.cli", *self.args, "--port", str(self.port)]
        self.log = open(f"/tmp/llmcell-test-{self.port}.log", "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env=self.env)

    def wait(self, path: str = "/health", timeout: float = 60.0) -> "Proc":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.url}{path}")

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Cell:
    """Start pieces on demand; everything is stopped at the end of the test."""

    def __init__(self, tmp_path, token: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.admin: Proc | None = None
        self.gateway: Proc | None = None
        self.env = dict(os.environ, LLMCELL_CELL_TOKEN=token) if token else None
        """With a token: auth on, every member started with the cell credential."""
        self.api_key: str | None = None
        """The key `sax()` sends (an admin key, with auth on)."""

    def start_admin(self, *args: str, port: int | None = None) -> Proc:
        self.admin = Proc("admin", "--state", str(self.tmp_path / "admin.sqlite3"),
                          "--heartbeat-interval", HEARTBEAT, "--kv-reserve", "256MiB", *args,
                          port=port, env=self.env)
        self.procs.append(self.admin)  # stopped at the end even if it never got ready
        return self.admin.wait()

    def start_server(self, name: str, memory: str = "3GiB", port: int | None = None) -> Proc:
        p = Proc("server", "--admin", self.admin.url, "--server-id", name, "--memory", memory,
                 "--threads", "1", "--kv-cache-memory", "256MiB", "--max-model-len", "2048",
                 port=port, env=self.env)
        self.procs.append(p)
        return p.wait()

    def start_gateway(self, *args: str) -> Proc:
        self.gateway = Proc("gateway", "--admin", self.admin.url, *args, env=self.env)
        self.procs.append(self.gateway)
        return self.gateway.wait()

    def sax(self, method: str, path: str, json=None, v1: bool = False) -> httpx.Response:
        headers = {"X-Sax-Compat": "v1"} if v1 else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return httpx.request(method, self.gateway.url + path, json=json, headers=headers,
                             timeout=120)

    def publish(self, replicas: int, model: str = SAX, checkpoint: str = "None") -> None:
        r = self.sax("POST", "/publish", {"model": model, "model_path": MODEL,
                                          "checkpoint": checkpoint, "replicas": replicas})
        assert r.status_code == 200, r.text

    def listcell(self, model: str = SAX) -> dict:
        r = self.sax("GET", "/listcell", {"model": model})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_active(self, n: int, model: str = SAX, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cell = self.listcell(model)
            seen = httpx.get(self.gateway.url + "/health").json()["models"].get(model, 0)
            if cell["active_replicas"] == n and seen == n:
                return cell
            time.sleep(0.1)
        raise TimeoutError(f"{model}: {self.listcell(model)} (wanted {n} active)")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
