"""A group running an external OpenAI-compatible engine joins the cell (how a vLLM group rendered
by `llmcell render --engine vllm` serves): `llmcell server --engine openai` in front of the
upstream registers with the one model it serves, and that name is published like a file."""

from __future__ import annotations

import time

import httpx
import pytest
from openai import OpenAI

from tests.cell.conftest import MODEL, Proc

pytestmark = pytest.mark.slow

EXTERNAL = "/sax/test/external"
UPSTREAM_NAME = "smol-upstream"


def wait_registered(admin: str, server_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in httpx.get(admin + "/cell/servers", timeout=5).json():
            if server["id"] == server_id:
                return server
        time.sleep(0.1)
    raise TimeoutError(f"{server_id} did not register with {admin}")


def test_external_engine_group_joins_and_serves_through_the_gateway(cell):
    upstream = Proc("server", "--model", MODEL, "--served-model-name", UPSTREAM_NAME,
                    "--threads", "1", "--kv-cache-memory", "256MiB", "--max-model-len", "2048")
    cell.procs.append(upstream)
    upstream.wait("/ready", timeout=120)
    cell.start_admin()
    cell.start_gateway()
    publish = {"model": EXTERNAL, "model_path": UPSTREAM_NAME, "checkpoint": "None",
               "replicas": 1}
    # Nothing on disk by that name and no group serves it yet: refused, saying why.
    r = cell.sax("POST", "/publish", publish)
    assert r.status_code == 400 and "external engine" in r.text

    joiner = Proc("server", "--engine", "openai", "--upstream", upstream.url,
                  "--served-model-name", UPSTREAM_NAME, "--admin", cell.admin.url,
                  "--server-id", "vllm-group-0", "--memory", "40GiB")
    cell.procs.append(joiner)
    joiner.wait()
    server = wait_registered(cell.admin.url, "vllm-group-0")
    assert server["models"] == [UPSTREAM_NAME] and server["engine"] == "openai"
    r = cell.sax("POST", "/publish", publish)
    assert r.status_code == 200, r.text
    listed = cell.wait_active(1, model=EXTERNAL)
    assert listed["active_replicas"] == 1

    r = cell.sax("POST", "/generate", {"model": EXTERNAL, "query": "The capital of France is",
                                       "extra_inputs": {"per_example_max_decode_steps": 8}})
    assert r.status_code == 200, r.text
    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused")
    chat = client.chat.completions.create(
        model=EXTERNAL, max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in chat.choices[0].message.content
