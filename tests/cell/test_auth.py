"""A cell with auth on, as real processes on loopback: keys made with `llmcell keys`, the
official `openai` client with and without them, members that refuse calls which skip the
gateway, and a revocation that reaches every gateway within 2 s while a running stream
finishes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest

from llmcell.protocol.auth import new_key
from tests.cell.conftest import HEARTBEAT, SAX, Cell, Proc

TOKEN = "cell-credential-for-tests-" + "x" * 20
ADMIN_KEY = new_key()


def keys(cell: Cell, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LLMCELL_API_KEY=ADMIN_KEY)
    env.pop("LLMCELL_CELL_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "llmcell.cli", "keys", "--admin",
                           cell.admin.url, *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture()
def secure_cell(tmp_path):
    cell = Cell(tmp_path, TOKEN)
    cell.admin = Proc("admin", "--state", str(tmp_path / "admin.sqlite3"), "--heartbeat-interval",
                      HEARTBEAT, "--kv-reserve", "256MiB",
                      env=dict(cell.env, LLMCELL_ADMIN_KEY=ADMIN_KEY)).wait()
    cell.procs.append(cell.admin)
    cell.api_key = ADMIN_KEY
    yield cell
    cell.stop()


@pytest.mark.slow
def test_keys_roles_direct_calls_and_revocation(secure_cell):
    cell = secure_cell
    server = cell.start_server("server-0")
    cell.start_gateway()
    second = Proc("gateway", "--admin", cell.admin.url, env=cell.env).wait()
    cell.procs.append(second)
    cell.publish(1)
    cell.wait_active(1)

    made = keys(cell, "create", "--tenant", "team-a", "--role", "user", "--models",
                "/sax/test/*", "--rpm", "600", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    user = made.stdout.strip()
    viewer = keys(cell, "create", "--tenant", "team-b", "--role", "viewer").stdout.strip()
    listed = keys(cell, "list").stdout
    assert "team-a" in listed and user not in listed and "hash" not in listed

    db = sqlite3.connect(cell.tmp_path / "admin.sqlite3")
    stored = " ".join(str(row) for row in db.execute("SELECT * FROM keys"))
    db.close()
    assert user not in stored and ADMIN_KEY not in stored and viewer not in stored

    time.sleep(1.0)  # the gateways follow the key table every 0.5 s
    for gw in (cell.gateway, second):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=user, max_retries=0)
        r = client.chat.completions.create(model="smollm2", max_tokens=4, messages=[
            {"role": "user", "content": "Hi"}])
        assert r.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError, match="not valid") as e:
        openai.OpenAI(base_url=cell.gateway.url + "/v1", api_key="sk-llmcell-" + "A" * 43,
                      max_retries=0).models.list()
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as e:
        openai.OpenAI(base_url=cell.gateway.url + "/v1", api_key=viewer,
                      max_retries=0).chat.completions.create(
            model="smollm2", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "insufficient_role"

    # Calls that skip the gateway: the server and the admin want the cell's credential.
    direct = httpx.post(server.url + "/v1/chat/completions", json={
        "model": SAX, "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
    assert direct.status_code == 401
    direct = httpx.post(server.url + "/v1/chat/completions", json={
        "model": SAX, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {user}"}, timeout=30)
    assert direct.status_code == 401  # a key is for the gateway: a server knows only members
    assert httpx.get(server.url + "/ready").status_code == 200  # probes stay open
    impostor = httpx.post(cell.admin.url + "/cell/servers", json={"server": {
        "id": "server-0", "address": "http://127.0.0.1:1", "engine": "builtin",
        "memory_bytes": 1 << 30, "group_size": 1, "models": ["*"]}})
    assert impostor.status_code == 401

    # Revocation mid-stream: the running stream finishes, new requests are refused on every
    # gateway within 2 s.
    client = openai.OpenAI(base_url=cell.gateway.url + "/v1", api_key=user, max_retries=0)
    stream = client.chat.completions.create(
        model="smollm2", max_tokens=48, stream=True, extra_body={"ignore_eos": True},
        messages=[{"role": "user", "content": "Tell me about rivers."}])
    first = next(iter(stream))
    key_id = next(line for line in keys(cell, "list").stdout.splitlines() if "team-a" in line)
    key_id = key_id.split('"id": "')[1].split('"')[0]
    assert keys(cell, "revoke", key_id).returncode == 0
    revoked_at = time.monotonic()
    refused = set()
    while len(refused) < 2 and time.monotonic() - revoked_at < 2.0:
        for gw in (cell.gateway, second):
            r = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {user}"})
            if r.status_code == 401:
                refused.add(gw.url)
        time.sleep(0.05)
    assert len(refused) == 2, f"revocation reached {refused} within 2 s"
    chunks = [first, *stream]  # the stream that was running when its key was revoked
    assert chunks[-1].choices[0].finish_reason == "length"
