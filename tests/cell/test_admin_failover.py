"""Two admins on one PostgreSQL, a model server and a gateway that know both: `kill -9` of the
leading admin while requests flow. The standby leads within 10 s, nothing published is lost, no
request fails (the data plane does not need the admin), the server re-registers with the new
leader by itself without reloading, a publish after the failover is placed, and the old leader,
restarted, stands by."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.cell.conftest import HEARTBEAT, SAX, Proc
from tests.postgres import Postgres
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow


def wait_for(check, what: str, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(what)
        time.sleep(0.1)
    return time.monotonic() - started


def ready(proc: Proc) -> bool:
    try:
        return httpx.get(proc.url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_standby_admin_takes_over_and_nothing_is_lost(cell, tmp_path):
    pg = Postgres()
    try:
        url = pg.fresh_database()
        ports = [free_port(), free_port()]
        admins = [Proc("admin", "--state", url, "--advertise", f"http://127.0.0.1:{port}",
                       "--leader-lease", "1.5", "--heartbeat-interval", HEARTBEAT,
                       "--kv-reserve", "256MiB", port=port) for port in ports]
        cell.procs += admins
        for a in admins:
            a.wait()
        both = ",".join(a.url for a in admins)
        wait_for(lambda: ready(admins[0]) or ready(admins[1]), "a leader", 10)
        leader, standby = admins if ready(admins[0]) else admins[::-1]
        cell.admin = standby  # the members are told both; start the server through the standby
        server = Proc("server", "--admin", both, "--server-id", "s0", "--memory", "3GiB",
                      "--threads", "1", "--kv-cache-memory", "256MiB", "--max-model-len", "2048")
        cell.procs.append(server)
        server.wait()
        cell.gateway = Proc("gateway", "--admin", both)
        cell.procs.append(cell.gateway)
        cell.gateway.wait()
        cell.publish(1)
        cell.wait_active(1)
        load_pid = server.proc.pid

        statuses: list[int] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                r = httpx.post(cell.gateway.url + "/v1/chat/completions", json={
                    "model": "smollm2", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}]}, timeout=60)
                statuses.append(r.status_code)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            time.sleep(1.0)
            leader.kill9()
            took = wait_for(lambda: ready(standby), "the standby leads", 10)
            wait_for(lambda: httpx.get(standby.url + f"/models{SAX}").json()
                     .get("active_replicas") == 1, "the server re-registered", 20)
            time.sleep(1.0)
        finally:
            stop.set()
            loader.join(60)
        assert statuses and set(statuses) == {200}, statuses
        assert took < 10
        assert server.proc.pid == load_pid  # the server moved; nothing restarted
        cell.publish(1, model="/sax/test/two")  # through the gateway, to the new leader
        cell.wait_active(1, "/sax/test/two")
        assert cell.listcell()["active_replicas"] == 1  # the first model is still there

        leader.start()  # the old leader comes back as a standby
        leader.wait()
        wait_for(lambda: httpx.get(leader.url + "/ready").json().get("leader") == standby.url,
                 "the old leader stands by", 10)
        assert not ready(leader) and ready(standby)
    finally:
        pg.close()
