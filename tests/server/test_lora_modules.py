"""A standalone model server with `--lora-modules` (vLLM's flag): the adapters are served under
their own names beside the model, with `parent` on their cards and their own metrics."""

from __future__ import annotations

import time

import httpx
from openai import OpenAI

from bench.lora import write_adapter
from llmcell.engine.loader.model_config import read_model_config
from llmcell.engine.loader.registry import resolve_model_path
from tests.server.conftest import ServerProcess

MODEL = "smollm2-135m-instruct"


def test_server_serves_lora_modules(tmp_path):
    config = read_model_config(resolve_model_path(MODEL))
    sql = write_adapter(tmp_path / "sql", config, 8, seed=1)
    server = ServerProcess("--kv-cache-memory", "128MiB", "--max-model-len", "1024",
                           "--lora-modules", f"sql={sql}")
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 60
        while "sql" not in {m.id for m in client.models.list().data}:
            assert time.monotonic() < deadline, "the adapter never appeared"
            time.sleep(0.2)
        cards = {m.id: m.model_extra for m in client.models.list().data}
        assert cards["sql"]["parent"] == MODEL and cards[MODEL]["parent"] is None
        assert cards["sql"]["root"] == str(sql)
        out = client.chat.completions.create(model="sql", max_tokens=8, messages=[
            {"role": "user", "content": "Say hello."}])
        assert out.model == "sql" and out.usage.completion_tokens > 0
        text = httpx.get(server.url + "/metrics").text
        assert f'llmcell:lora_loads_total{{adapter="sql",model_name="{MODEL}"}} 1.0' in text
        assert 'llmcell:lora_resident{adapter="sql"' in text
        assert any(line.startswith("llmcell:request_success_total{") and 'model_name="sql"' in line
                   for line in text.splitlines())  # its requests are counted under its name
    finally:
        server.stop()
