"""`llmcell up` (what `make run` runs): the whole cell from one command, stopped by Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.server.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("group_size", [1, 2])
def test_up_serves_both_apis_and_stops_cleanly(tmp_path, group_size):
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "up", "--port", str(port), "--admin-port",
         str(admin_port), "--state", str(tmp_path / "up.sqlite3"), "--threads", "1",
         "--group-size", str(group_size)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "llmcell up exited early:\n" + "".join(lines)
            lines.append(line)
            if "Ctrl-C stops the cell" in line:
                break
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
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0
    assert "Traceback" not in "".join(lines) + proc.stdout.read()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{admin_port}/health", timeout=1)
