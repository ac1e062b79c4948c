"""A model-server group of 2 processes (leader + worker) serving one tensor-parallel replica:
the same greedy answers as one process, clean stop of both, and a dead worker turns into a clear
503 instead of a hang."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from llmcell.config.server import GroupConfig
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "List three colors."]


def start(rank: int, size: int, group_port: int, http_port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "server", "--group-size", str(size),
         "--group-rank", str(rank), "--group-port", str(group_port), "--port", str(http_port),
         "--threads", "1", "--kv-cache-memory", "128MiB", "--dtype", "float32"],
        stdout=log, stderr=subprocess.STDOUT)


def group_ports(n: int) -> list[int]:
    """A group port, then n - 1 more: distinct, and clear of the group port's neighbour (its
    store listens there)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports and (not ports or port != ports[0] + 1):
            ports.append(port)
    return ports


@pytest.fixture()
def group(tmp_path):
    group_port, http_port, worker_port = group_ports(3)
    log = open(tmp_path / "group.log", "w")
    worker = start(1, 2, group_port, worker_port, log)
    leader = start(0, 2, group_port, http_port, log)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert leader.poll() is None and worker.poll() is None, (tmp_path / "group.log").read_text()
        time.sleep(0.2)
    yield url, leader, worker, tmp_path / "group.log"
    for p in (leader, worker):
        if p.poll() is None:
            p.kill()
            p.wait()
    log.close()


def answers(url: str) -> list[str]:
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    return [client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": q}]).choices[0].message.content for q in QUESTIONS]


def test_group_answers_like_one_process_and_stops_together(group, checkpoint):
    from llmcell.config.engine import EngineConfig
    from llmcell.engine.llm import LLM
    from llmcell.protocol.sampling import SamplingParams

    url, leader, worker, log = group
    worker_url = f"http://127.0.0.1:{worker.args[worker.args.index('--port') + 1]}"
    health = httpx.get(worker_url + "/ready", timeout=5)
    assert health.status_code == 200 and health.json()["role"] == "worker"
    assert health.json()["model"] == "smollm2-135m-instruct"
    llm = LLM(config=EngineConfig(dtype="float32", threads=1), checkpoint=checkpoint)
    expected = [o.outputs[0].text for o in llm.chat(
        [[{"role": "user", "content": q}] for q in QUESTIONS],
        SamplingParams(max_tokens=24, temperature=0))]
    assert answers(url) == expected
    assert "holding" in log.read_text() and "1 KV heads" in log.read_text()
    leader.send_signal(signal.SIGTERM)
    assert leader.wait(60) == 0
    assert worker.wait(60) == 0  # told to stop by the leader


def test_a_dead_worker_takes_the_group_down_quickly_and_requests_fail_clearly(group):
    url, leader, worker, log = group
    worker.kill()
    worker.wait()
    try:  # before the leader notices: the step fails, a clear 503
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "smollm2-135m-instruct", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 503, r.text
    except httpx.HTTPError:
        pass  # or the leader is already gone
    # the leader leaves (so the whole group restarts together) within the heartbeat timeout
    assert leader.wait(15) == 3
    assert "stopped answering" in log.read_text()


def test_group_config_reads_the_leaderworkerset_environment():
    env = {"LWS_GROUP_SIZE": "4", "LWS_WORKER_INDEX": "2",
           "LWS_LEADER_ADDRESS": "cell-ms-0.cell-ms.ns", "LLMCELL_GROUP_PORT": "29600"}
    g = GroupConfig.from_env(env)
    assert (g.size, g.rank, g.leader, g.port) == (4, 2, "cell-ms-0.cell-ms.ns", 29600)
    assert GroupConfig.from_env(env, rank=0).rank == 0  # flags win
    with pytest.raises(ValueError, match="rank=4"):
        GroupConfig.from_env(env, rank=4)
    with pytest.raises(ValueError, match="LWS_GROUP_SIZE='x'"):
        GroupConfig.from_env({"LWS_GROUP_SIZE": "x"})


def start_group(cell, tmp_path, http_port: int) -> tuple[list[subprocess.Popen], Path]:
    group_port, worker_port = group_ports(2)
    while http_port in (group_port, group_port + 1, worker_port):
        group_port, worker_port = group_ports(2)
    log_path = tmp_path / f"group-{group_port}.log"
    log = open(log_path, "w")
    members = [subprocess.Popen(
        [sys.executable, "-m", "llmcell.cli", "server", "--group-size", "2", "--group-rank",
         str(rank), "--group-port", str(group_port), "--port",
         str(http_port if rank == 0 else worker_port), "--threads", "1",
         "--kv-cache-memory", "128MiB", "--admin", cell.admin.url, "--server-id", "group-0",
         "--memory", "3GiB"], stdout=log, stderr=subprocess.STDOUT) for rank in (1, 0)]
    log.close()
    return members, log_path


def ask(cell) -> str:
    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused", max_retries=0)
    return client.chat.completions.create(
        model="smollm2", max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}]
    ).choices[0].message.content


def test_a_group_joins_the_cell_fails_over_cleanly_and_restarts(cell, tmp_path):
    cell.start_admin()
    http_port = free_port()
    members, log = start_group(cell, tmp_path, http_port)
    try:
        cell.start_gateway()
        cell.publish(1)
        cell.wait_active(1, timeout=120)
        (server,) = httpx.get(cell.admin.url + "/cell/servers").json()
        assert server["id"] == "group-0" and server["group_size"] == 2
        assert "Paris" in ask(cell)
        assert "llmcell worker 1/2: smollm2-135m-instruct: holding" in log.read_text()

        members[0].kill()  # a worker dies
        killed = time.monotonic()
        deadline = killed + 10
        while cell.listcell()["active_replicas"] != 0:
            assert time.monotonic() < deadline, "the replica stayed active"
            time.sleep(0.2)
        print(f"replica inactive {time.monotonic() - killed:.1f}s after the worker died")
        r = httpx.post(cell.gateway.url + "/v1/chat/completions", timeout=30, json={
            "model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 503 and "replica" in r.json()["error"]["message"]
        assert members[1].wait(15) == 3  # the leader left: the group restarts as a whole

        members, log = start_group(cell, tmp_path, http_port)  # the group comes back
        cell.wait_active(1, timeout=120)
        assert "Paris" in ask(cell)
        members[1].send_signal(signal.SIGTERM)  # the leader: it stops its worker
        assert members[1].wait(60) == 0 and members[0].wait(60) == 0
    finally:
        for p in members:
            if p.poll() is None:
                p.kill()
                p.wait()
