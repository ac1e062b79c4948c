"""Multi-LoRA in a real cell (admin, two model servers, gateway as processes on loopback): a base
model and three PEFT adapters published through the gateway's Saxml API, served through the
gateway to the official `openai` client, one adapter unpublished while the others keep serving;
what is refused at publish, with a 400 naming it."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from openai import NotFoundError, OpenAI
from safetensors.numpy import save_file

from tests.cell.conftest import MODEL, SAX, Cell

pytest.importorskip("peft")
from tests.engine.hf_reference import build_hf_model  # noqa: E402
from tests.engine.lora.peft_adapters import make_adapter  # noqa: E402

ADAPTERS = {"/sax/test/sql": (["q_proj", "v_proj"], 8), "/sax/test/poet": (["o_proj", "down_proj"], 4),
            "/sax/test/chef": (["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"], 16)}


@pytest.fixture(scope="module")
def adapter_dirs(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    hf = build_hf_model(checkpoint)
    dirs = {name: make_adapter(hf, root / name.rsplit("/", 1)[1], targets, rank, seed=i, scale=0.2)
            for i, (name, (targets, rank)) in enumerate(ADAPTERS.items())}
    bad = root / "bad-shape"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
               np.zeros((4, 100), np.float32),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":
               np.zeros((576, 4), np.float32)}, str(bad / "adapter_model.safetensors"))
    zero = root / "rank-zero"
    zero.mkdir()
    (zero / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 0, "target_modules": ["q_proj"]}))
    save_file({"x": np.zeros(1, np.float32)}, str(zero / "adapter_model.safetensors"))
    return root, dirs, bad, zero


def publish(cell: Cell, model: str, path: str, base: str | None, replicas: int = 2):
    body = {"model": model, "model_path": path, "checkpoint": None, "replicas": replicas}
    if base is not None:
        body["base"] = base
    return cell.sax("POST", "/publish", body)


@pytest.mark.slow
def test_base_and_three_adapters(cell: Cell, adapter_dirs):
    root, dirs, bad, zero = adapter_dirs
    cell.start_admin("--model-root", str(root))
    servers = [cell.start_server(f"server-{i}") for i in range(2)]
    cell.start_gateway()

    r = publish(cell, "/sax/test/sql", str(dirs["/sax/test/sql"]), SAX)
    assert r.status_code == 400 and "base model /sax/test/smollm2 is not published" in r.text
    assert publish(cell, SAX, MODEL, None).status_code == 200
    cell.wait_active(2)

    for path, message in ((bad, "lora_A.weight' has shape [4, 100]"),
                          (zero, "r=0 must be an integer in [1, 256]"),
                          (root, "not a PEFT adapter directory")):
        r = publish(cell, "/sax/test/bad", str(path), SAX)
        assert r.status_code == 400 and message in r.text, r.text
    for name, path in dirs.items():
        r = publish(cell, name, str(path), SAX)
        assert r.status_code == 200, r.text
    r = publish(cell, "/sax/test/meta", str(dirs["/sax/test/sql"]), "/sax/test/sql")
    assert r.status_code == 400 and "is itself a LoRA adapter" in r.text
    for name in dirs:
        cell.wait_active(2, name)
    assert cell.listcell("/sax/test/sql")["base"] == SAX
    assert sorted(cell.listcell(SAX)["adapters"]) == sorted(dirs)

    client = OpenAI(base_url=cell.gateway.url + "/v1", api_key="unused", max_retries=0)
    cards = {m.id: m for m in client.models.list().data}
    assert {name: cards[name].model_extra["parent"] for name in dirs} == {n: SAX for n in dirs}
    assert cards[SAX].model_extra["parent"] is None

    def ask(model: str) -> str:
        out = client.chat.completions.create(
            model=model, max_tokens=12, temperature=0.0,
            messages=[{"role": "user", "content": "Name a color."}])
        assert out.model == model
        return out.choices[0].message.content

    base = ask(SAX)
    answers = {name: ask(name) for name in dirs}
    assert any(a != base for a in answers.values()), answers  # the adapters change the output

    assert cell.sax("POST", "/unpublish", {"model": SAX}).status_code == 409
    assert cell.sax("POST", "/unpublish", {"model": "/sax/test/poet"}).status_code == 200
    with pytest.raises(NotFoundError):
        ask("/sax/test/poet")
    for name in ("/sax/test/sql", "/sax/test/chef", SAX):  # the others keep serving
        assert ask(name)

    metrics = "".join(httpx.get(s.url + "/metrics").text for s in servers)
    assert 'llmcell:lora_loads_total{adapter="/sax/test/sql"' in metrics
    assert any(line.startswith("llmcell:request_success_total{")
               and 'model_name="/sax/test/chef"' in line for line in metrics.splitlines())
