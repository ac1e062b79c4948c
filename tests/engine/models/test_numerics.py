"""The load-time check of reduced-precision kernels, and what the engine core does with a bad one."""

from __future__ import annotations

import pytest
import torch

from llmcell.config import EngineConfig
from llmcell.engine import core as core_module
from llmcell.engine.core import EngineCore
from llmcell.engine.models import numerics
from llmcell.engine.models.llama import LlamaModel


@pytest.fixture(scope="module")
def bf16_model(checkpoint):
    return LlamaModel(checkpoint.config, checkpoint.weights, torch.bfloat16, torch.device("cpu"))


class WrongPastOneTile:
    """A projection that is right for a few rows and adds garbage past 16 (as oneDNN's AMX bf16
    matmul did for some shapes)."""

    def __init__(self, inner) -> None:
        self.inner, self.weight, self.bias = inner, inner.weight, inner.bias
        self.reference_weight = inner.reference_weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if x.shape[0] > 16:
            y = y.clone()
            y[16:] += y[:1]
        return y


def test_correct_kernels_pass(bf16_model):
    assert numerics.check_model(bf16_model) is None


def test_fp32_is_not_checked(checkpoint):
    model = LlamaModel(checkpoint.config, checkpoint.weights, torch.float32, torch.device("cpu"))
    model.layers[0].qkv = WrongPastOneTile(model.layers[0].qkv)
    assert numerics.check_model(model) is None


def test_a_projection_wrong_past_one_tile_is_named(bf16_model, monkeypatch):
    layer = bf16_model.layers[0]
    monkeypatch.setattr(layer, "gate_up", WrongPastOneTile(layer.gate_up))
    problem = numerics.check_model(bf16_model)
    assert problem is not None and problem.rows == 37 and problem.error > numerics.TOLERANCE
    assert "gate/up projection (3072x576)" in str(problem)


def test_int8_weights_are_checked_dequantized(checkpoint):
    model = LlamaModel(checkpoint.config, checkpoint.weights, torch.bfloat16, torch.device("cpu"),
                       "int8")
    assert numerics.check_model(model) is None
    model.layers[0].down.scales.mul_(1.5)  # what the check compares against changes with them
    assert numerics.check_model(model) is None
    model.layers[0].o = WrongPastOneTile(model.layers[0].o)
    assert "output projection" in str(numerics.check_model(model))


def test_int8_with_a_dense_copy_is_checked_on_both_paths(checkpoint):
    from llmcell.engine.models.linear import DENSE_MIN_ROWS

    model = LlamaModel(checkpoint.config, checkpoint.weights, torch.bfloat16, torch.device("cpu"),
                       "int8_dense")
    assert numerics.check_model(model) is None
    layer = model.layers[0].gate_up
    small, large = layer.reference_weight(1, 64), layer.reference_weight(DENSE_MIN_ROWS, 64)
    assert torch.equal(large, layer.dense[:64].float()) and not torch.equal(small, large)
    model.layers[0].gate_up = WrongPastOneTile(layer)
    assert "gate/up" in str(numerics.check_model(model))


def test_nan_is_a_problem():
    assert numerics.relative_error(torch.tensor([float("nan")]), torch.tensor([1.0])) > 1


@pytest.fixture()
def bf16_on_any_cpu(monkeypatch):
    """dtype=auto resolves to bf16 here whatever the CPU, and oneDNN's switch is restored."""
    monkeypatch.setattr(core_module, "resolve_dtype", lambda name, device: (
        torch.bfloat16 if name in ("auto", "bfloat16") else torch.float32))
    enabled = torch.backends.mkldnn.enabled
    yield
    torch.backends.mkldnn.enabled = enabled


def _broken(while_mkldnn_only: bool):
    def check(model):
        if model.dtype == torch.float32:
            return None
        if while_mkldnn_only and not torch.backends.mkldnn.enabled:
            return None
        return numerics.Problem("qkv projection (960x576)", 37, 0.8)
    return check


def test_wrong_only_through_onednn_keeps_bf16_with_onednn_off(checkpoint, bf16_on_any_cpu,
                                                               monkeypatch, capsys):
    monkeypatch.setattr(numerics, "check_model", _broken(while_mkldnn_only=True))
    core = EngineCore(EngineConfig(kv_cache_memory=16 << 20), checkpoint)
    assert core.dtype == torch.bfloat16 and not torch.backends.mkldnn.enabled
    assert "oneDNN is off" in capsys.readouterr().err


def test_wrong_everywhere_auto_falls_back_to_fp32(checkpoint, bf16_on_any_cpu, monkeypatch,
                                                   capsys):
    monkeypatch.setattr(numerics, "check_model", _broken(while_mkldnn_only=False))
    core = EngineCore(EngineConfig(kv_cache_memory=16 << 20), checkpoint)
    assert core.dtype == torch.float32 and core.model.dtype == torch.float32
    assert torch.backends.mkldnn.enabled
    assert "falls back to float32" in capsys.readouterr().err
    ids = core.tokenizer.encode("The capital of France is")
    core.add_request("r", ids, core_module.SamplingParams(max_tokens=2, temperature=0.0))
    while core.has_work():
        core.step()


def test_wrong_everywhere_explicit_bf16_refuses_to_start(checkpoint, bf16_on_any_cpu,
                                                         monkeypatch):
    monkeypatch.setattr(numerics, "check_model", _broken(while_mkldnn_only=False))
    with pytest.raises(RuntimeError, match=r"dtype='bfloat16' computes wrong results.*qkv"):
        EngineCore(EngineConfig(dtype="bfloat16", kv_cache_memory=16 << 20), checkpoint)
