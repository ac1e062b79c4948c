"""`llmcell plan`: the seed's worked example and four more, pinned; shapes read from files; help."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from llmcell.config.deploy import PlanConfig
from llmcell.deploy.plan import make_plan

GB = 1e9


def plan_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmcell.cli", "plan", *args],
                          capture_output=True, text=True, timeout=120)


def plan_json(*args: str) -> dict:
    r = plan_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_seed_175b_bf16_on_v5e_is_4x8_with_8_nodes():
    p = plan_json("--params", "175e9", "--dtype", "bf16", "--accelerator", "tpu-v5e")
    assert p["memory"]["weights"] == pytest.approx(350 * GB, rel=0.01)  # the seed's ~350 GB
    best = p["candidates"][0]
    assert (best["topology"], best["devices"], best["nodes"], best["machine_type"]) == (
        "4x8", 32, 8, "ct5lp-hightpu-4t")
    assert best["tensor_parallel"] == 32 and best["pipeline_parallel"] == 1
    # the next smaller multi-host slice (4x4, 16 chips = 256 GB) cannot hold the weights
    assert all(c["devices"] >= 32 for c in p["candidates"])
    assert any("typical" in n and "GPT-3-175B" in n for n in p["notes"])


def test_8b_bf16_on_l4_fits_one_gpu_and_lists_two_next():
    p = plan_json("--params", "8B", "--accelerator", "nvidia-l4")
    assert 16 * GB <= p["memory"]["total"] <= 24 * GB
    best = p["candidates"][0]
    assert (best["devices"], best["nodes"], best["machine_type"], best["tensor_parallel"]) == (
        1, 1, "g2-standard-8", 1)
    assert [c["devices"] for c in p["candidates"]] == [1, 2, 4]


def test_70b_bf16_on_h100_needs_four_gpus_not_two():
    p = plan_json("--params", "70e9", "--accelerator", "nvidia-h100-80gb")
    # 140 GB of weights + KV + 10% reserve is just over two 80 GB cards
    assert p["memory"]["total"] > 160 * GB
    best = p["candidates"][0]
    assert (best["devices"], best["nodes"], best["machine_type"], best["tensor_parallel"]) == (
        4, 1, "a3-highgpu-4g", 4)


def test_405b_int8_on_v6e_is_a_4x4_slice():
    p = plan_json("--params", "405e9", "--dtype", "int8", "--accelerator", "tpu-v6e")
    assert p["memory"]["weights"] == pytest.approx(405 * GB, rel=0.01)
    best = p["candidates"][0]
    assert (best["topology"], best["devices"], best["nodes"], best["machine_type"]) == (
        "4x4", 16, 4, "ct6e-standard-4t")


def test_smollm2_on_cpu_reads_the_gguf_and_fits_the_smallest_node():
    p = plan_json("--model", "smollm2-135m-instruct", "--dtype", "fp32", "--accelerator", "cpu")
    m = p["model"]
    assert 130e6 < m["params"] < 140e6
    assert (m["layers"], m["kv_heads"], m["head_dim"]) == (30, 3, 64)
    assert m["source"].endswith(".gguf")
    # KV: 2 x 30 layers x 3 heads x 64 x 2 bytes = 23,040 bytes per token, x 2048 x 8
    assert p["memory"]["kv_cache"] == 23040 * 2048 * 8
    assert p["candidates"][0]["machine_type"] == "n2-standard-2"
    assert p["notes"] == []


def test_405b_bf16_on_h100_spans_two_nodes_with_pipeline_stages():
    p = make_plan(PlanConfig(model=None, params=405e9, accelerator="nvidia-h100-80gb"))
    best = p.best()
    assert (best.topology, best.devices, best.nodes) == ("2x8", 16, 2)
    assert (best.tensor_parallel, best.pipeline_parallel) == (8, 2)


def test_explicit_shape_overrides_the_typical_one():
    typical = make_plan(PlanConfig(model=None, params=70e9, accelerator="nvidia-h100-80gb"))
    mha = make_plan(PlanConfig(model=None, params=70e9, layers=80, kv_heads=64, head_dim=128,
                               accelerator="nvidia-h100-80gb"))
    assert mha.memory.kv_cache == 8 * typical.memory.kv_cache
    assert mha.notes == ()


def test_hugging_face_config_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}))
    p = make_plan(PlanConfig(model=str(tmp_path), accelerator="nvidia-l4"))
    assert 7.9e9 < p.model.params < 8.1e9  # Llama-3.1-8B counted from its config
    assert (p.model.layers, p.model.kv_heads, p.model.head_dim) == (32, 8, 128)


def test_nothing_fits_exits_1_with_advice():
    r = plan_cli("--params", "1T", "--accelerator", "nvidia-l4")  # 2 TB > 64 x 24 GB
    assert r.returncode == 1
    assert "no nvidia-l4 shape fits" in r.stdout and "--dtype int8" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--context", "0"], "context=0"),
    (["--params", "lots"], "not a parameter count"),
    (["--accelerator", "tpu-v9"], "invalid choice"),
    (["--model", "/no/such/model.gguf"], "no such file"),
])
def test_bad_input_is_named(args, needle):
    r = plan_cli(*args)
    assert r.returncode == 2 and needle in r.stderr


def test_table_output_lists_candidates_best_first():
    r = plan_cli("--params", "175e9", "--accelerator", "tpu-v5e")
    assert r.returncode == 0
    rows = [line.split() for line in r.stdout.splitlines() if line[:1].isdigit()]
    assert [row[1] for row in rows] == ["4x8", "8x8", "8x16"]
    assert "350.0 GB" in r.stdout


@pytest.mark.parametrize("verb", ["plan", "render"])
def test_help_explains_every_flag(verb):
    from llmcell.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verb_parser = sub.choices[verb]
    r = subprocess.run([sys.executable, "-m", "llmcell.cli", verb, "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for action in verb_parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, f"{action.option_strings} has no help"
        assert action.option_strings[-1] in r.stdout
