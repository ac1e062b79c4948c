"""A 2-member group whose members live in two network namespaces (ip netns + a veth pair), each
bound to its own address, serves chat completions through the gateway.

Namespace A holds the admin, the gateway and the group's leader (10.77.0.1); namespace B holds the
worker (10.77.0.2). Needs root and iproute2: skipped with the reason outside CI, failed in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.slow

A_IP, B_IP = "10.77.0.1", "10.77.0.2"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture()
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("LLMCELL_CI"):
            pytest.fail("the network-namespace test needs root and iproute2 in CI")
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = uuid.uuid4().hex[:6]
    a, b, va, vb = f"llmA{tag}", f"llmB{tag}", f"va{tag}", f"vb{tag}"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
    except subprocess.CalledProcessError as e:
        if os.environ.get("LLMCELL_CI"):
            raise
        pytest.skip(f"cannot create network namespaces here: {e.stderr.decode().strip()}")
    try:
        sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        sh("ip", "link", "set", va, "netns", a)
        sh("ip", "link", "set", vb, "netns", b)
        for ns, dev, ip in ((a, va, A_IP), (b, vb, B_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield (a, va), (b, vb)
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


TOKEN = "netns-cell-credential-" + "z" * 24
"""Beyond loopback auth is on: every member, and the test's calls, carry the cell credential."""


def in_ns(ns: str, dev: str, *args: str, log) -> subprocess.Popen:
    env = dict(os.environ, GLOO_SOCKET_IFNAME=dev, LLMCELL_CELL_TOKEN=TOKEN)
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "llmcell.cli",
                             *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def request(ns: str, url: str, body: dict | None = None, timeout: float = 60) -> dict:
    code = ("import httpx, json, sys; b = json.loads(sys.argv[2]); "
            f"h = {{'Authorization': 'Bearer {TOKEN}'}}; "
            "r = httpx.post(sys.argv[1], json=b, timeout=60, headers=h) if b else "
            "httpx.get(sys.argv[1], timeout=5, headers=h); print(json.dumps(r.json()))")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, url,
                        json.dumps(body or {})], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(r.stderr[-500:])
    return json.loads(r.stdout)


def wait_for(ns: str, url: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = request(ns, url, timeout=15)
            if check(data):
                return data
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def test_group_across_two_network_namespaces_serves_through_the_gateway(namespaces, tmp_path):
    (a, va), (b, vb) = namespaces
    admin, gateway = f"http://{A_IP}:10000", f"http://{A_IP}:8888"
    group = ["--group-size", "2", "--group-leader", A_IP, "--group-port", "29500",
             "--threads", "1", "--kv-cache-memory", "128MiB"]
    log = open(tmp_path / "netns.log", "w")
    procs = []
    try:
        procs.append(in_ns(a, va, "admin", "--host", A_IP, "--port", "10000", "--state",
                           str(tmp_path / "admin.sqlite3"), "--heartbeat-interval", "0.5",
                           log=log))
        procs.append(in_ns(b, vb, "server", *group, "--group-rank", "1", "--host", B_IP,
                           "--port", "8001", log=log))
        procs.append(in_ns(a, va, "server", *group, "--group-rank", "0", "--host", A_IP,
                           "--port", "8000", "--admin", admin, "--server-id", "group-ab",
                           "--memory", "3GiB", log=log))
        procs.append(in_ns(a, va, "gateway", "--host", A_IP, "--port", "8888", "--admin", admin,
                           log=log))
        wait_for(a, admin + "/cell/servers", lambda s: len(s) == 1)
        published = request(a, gateway + "/publish", {
            "model": "/sax/test/smollm2", "model_path": "smollm2-135m-instruct",
            "checkpoint": "None", "replicas": 1})
        assert published["model"] == "/sax/test/smollm2", published
        wait_for(a, gateway + "/health",
                 lambda h: h.get("models", {}).get("/sax/test/smollm2") == 1, timeout=180)
        chat = request(a, gateway + "/v1/chat/completions", {
            "model": "smollm2", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert "Paris" in chat["choices"][0]["message"]["content"], chat
        text = (tmp_path / "netns.log").read_text()
        assert f"joining the group at {A_IP}:29500" in text
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
