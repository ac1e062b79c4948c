"""`llmcell up` (what `make run` runs): the whole cell from one command, restarting what
crashes, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import free_port

pytestmark = pytest.mark.slow


def child_running(parent: int, *words: str) -> int:
    """The pid of `parent`'s child process whose command line holds `words`, in that order."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            args = (stat.parent / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and any(args[i:i + len(words)] == list(words)
                                  for i in range(len(args))):
            return int(stat.parent.name)
    raise LookupError(f"no child of {parent} runs {' '.join(words)}")


def read_until(proc: subprocess.Popen, lines: list[str], marker: str, timeout: float = 120) -> None:
    """Read `llmcell up`'s output into `lines` until a line holds `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "llmcell up exited early:\n" + "".join(lines)
        lines.append(line)
        if marker in line:
            return
    raise TimeoutError(f"no line with {marker!r}:\n" + "".join(lines))


def chat_until_served(url: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "model": "smollm2", "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4})
            if r.status_code == 200 or time.monotonic() > deadline:
                return r
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@pytest.mark.parametrize("group_size", [1, 2])
def test_up_serves_both_apis_restarts_a_crashed_server_and_stops_cleanly(tmp_path, group_size):
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "up", "--port", str(port), "--admin-port",
         str(admin_port), "--state", str(tmp_path / "up.sqlite3"), "--threads", "1",
         "--group-size", str(group_size)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        read_until(proc, lines, "Ctrl-C stops the cell")
        out = "".join(lines)
        assert f"http://127.0.0.1:{port}" in out and "/sax/test/smollm2" in out
        assert "curl" in out and "from openai import OpenAI" in out
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        r = httpx.post(url + "/generate", timeout=60,
                       json={"model": "/sax/test/smollm2", "query": "Hi"})
        assert r.status_code == 200 and r.json()[0][1] < 0
        servers = httpx.get(f"http://127.0.0.1:{admin_port}/cell/servers", timeout=10).json()
        assert [s["group_size"] for s in servers] == [group_size]

        # A model server killed outright (a group: one of its workers) comes back, rejoins the
        # admin and gets its replica again, and the gateway serves through it.
        victim = (("--server-id", "server-0") if group_size == 1 else ("--group-rank", "1"))
        pid = child_running(proc.pid, *victim)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not any("restarted" in line for line in lines) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "llmcell up exited:\n" + "".join(lines)
            lines.append(line)
        out = "".join(lines)
        name = "server-0" if group_size == 1 else "worker-0-1"
        whole = "" if group_size == 1 else " (the whole group of 2)"
        assert f"{name} exited with status -9; restarting server-0{whole} in 1s" in out, out
        assert "server-0: restarted" in out
        assert child_running(proc.pid, *victim) != pid
        r = chat_until_served(url, timeout=120)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0
    assert "Traceback" not in "".join(lines) + proc.stdout.read()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{admin_port}/health", timeout=1)


def test_up_with_auth_prints_an_admin_key_once_and_refuses_calls_without_it(tmp_path):
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "up", "--auth", "--port", str(port),
         "--admin-port", str(admin_port), "--state", str(tmp_path / "up.sqlite3"),
         "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        read_until(proc, lines, "members' credential is in")
        out = "".join(lines)
        key = next(w.split("=", 1)[1] for w in out.split() if w.startswith("LLMCELL_API_KEY=sk-"))
        assert 'Authorization: Bearer $LLMCELL_API_KEY' in out
        token = tmp_path / "up.cell-token"
        assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip() not in out
        url = f"http://127.0.0.1:{port}"
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4}
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 401
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert httpx.get(f"http://127.0.0.1:{admin_port}/cell/servers").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0


def test_up_publishes_lora_adapters_on_the_model(tmp_path):
    from bench.lora import write_adapter
    from llmcell.engine.loader.model_config import read_model_config
    from llmcell.engine.loader.registry import resolve_model_path

    adapter = write_adapter(tmp_path / "adapters" / "sql",
                            read_model_config(resolve_model_path("smollm2-135m-instruct")), 8, 1)
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "up", "--port", str(port), "--admin-port",
         str(admin_port), "--state", str(tmp_path / "up.sqlite3"), "--threads", "1",
         "--lora", f"/sax/test/sql={adapter}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        read_until(proc, lines, "published LoRA adapter /sax/test/sql")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            cards = {c["id"]: c for c in httpx.get(url + "/v1/models", timeout=10).json()["data"]}
            if "/sax/test/sql" in cards or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert cards["/sax/test/sql"]["parent"] == "/sax/test/smollm2"
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "/sax/test/sql", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4})
        assert r.status_code == 200 and r.json()["model"] == "/sax/test/sql", r.text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
