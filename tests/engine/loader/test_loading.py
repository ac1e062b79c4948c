"""Loading: GGUF and Hugging Face directories, dequantization, clear errors for bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize, quantize

from llmcell.engine import LLM, SamplingParams
from llmcell.engine.loader import load_checkpoint, resolve_model_path
from llmcell.engine.loader.dequant import dequantize
from llmcell.engine.loader.export import export_hf_dir
from llmcell.engine.loader.gguf_file import GGUFError, GGUFFile


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.BF16, Q.Q4_K, Q.Q6_K])
def test_dequantize_matches_gguf_reference(qtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    try:
        raw = quantize(x, qtype)
    except NotImplementedError:  # gguf cannot quantize K-quants: use random bytes of right size
        from gguf import GGML_QUANT_SIZES

        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 255, (8, 512 // block * size), dtype=np.uint8)
        raw[:, :2] = 0  # keep the scale finite
    raw = raw.view(np.uint8).reshape(8, -1)
    ours = dequantize(raw, qtype, (8, 512)).numpy()
    ref = np.asarray(gguf_dequantize(raw, qtype), dtype=np.float32).reshape(8, 512)
    np.testing.assert_array_equal(ours, ref)


def test_default_alias_loads_from_the_package(checkpoint):
    """(How fast it loads is measured by bench/engine_throughput.py, not asserted here.)"""
    path = resolve_model_path("smollm2-135m-instruct")
    assert path.name.endswith(".gguf") and path.is_file()
    LLM(model="smollm2-135m-instruct", kv_cache_memory=64 << 20)
    c = checkpoint.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == (30, 576, 9, 3)
    assert c.tie_word_embeddings and "lm_head" not in checkpoint.weights


def test_hf_directory_gives_the_same_text(checkpoint, tmp_path):
    export_hf_dir(checkpoint, tmp_path / "hf", torch.float32)
    hf = load_checkpoint(str(tmp_path / "hf"))
    assert hf.config.num_layers == checkpoint.config.num_layers
    assert hf.tokenizer.chat_template == checkpoint.tokenizer.chat_template
    params = SamplingParams(max_tokens=12, temperature=0.0)
    a = LLM(checkpoint=checkpoint, kv_cache_memory=32 << 20).generate(["Hello, my name is"], params)
    b = LLM(checkpoint=hf, kv_cache_memory=32 << 20).generate(["Hello, my name is"], params)
    assert a[0].outputs[0].text == b[0].outputs[0].text


def test_tokenizer_matches_transformers_gguf_conversion(checkpoint):
    transformers = pytest.importorskip("transformers")
    path = resolve_model_path("smollm2-135m-instruct")
    hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in ["Hello world! 12345 <|im_start|>user\nHi  there\t\tcafé 日本語 🙂",
                 "   leading spaces and 3.14159", "def f(x):\n    return x**2  # c", "I'm they'll"]:
        assert checkpoint.tokenizer.encode(text) == hf.encode(text, add_special_tokens=False)


def test_missing_file_names_the_path():
    with pytest.raises(ValueError, match="no such file or directory"):
        load_checkpoint("/nonexistent/model.gguf")


def test_truncated_gguf_names_the_file(tmp_path):
    src = resolve_model_path("smollm2-135m-instruct")
    bad = tmp_path / "truncated.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(5_000_000))
    with pytest.raises(GGUFError, match="truncated.gguf"):
        load_checkpoint(str(bad))


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "random.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(bad)


def test_wrong_suffix_and_bad_hf_directory(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .gguf file"):
        load_checkpoint(str(tmp_path / "weights.bin"))
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ValueError, match="not supported"):
        load_checkpoint(str(d))


def test_hf_directory_without_weights(checkpoint, tmp_path):
    d = export_hf_dir(checkpoint, tmp_path / "hf", torch.bfloat16)
    (d / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        load_checkpoint(str(d))


def test_dequantized_weights_are_cached_between_loads(tmp_path, checkpoint):
    from llmcell.engine.loader import load_checkpoint, weight_cache

    first = load_checkpoint("smollm2-135m-instruct", cache_dir=tmp_path)
    (written,) = tmp_path.iterdir()
    assert written == weight_cache.cache_file(tmp_path, first.source)
    again = load_checkpoint("smollm2-135m-instruct", cache_dir=tmp_path)
    assert again.weights.keys() == checkpoint.weights.keys()
    assert all(torch.equal(again.weights[k], checkpoint.weights[k]) for k in checkpoint.weights)
    # a cache that cannot be read is rebuilt, not trusted
    written.write_bytes(b"not a safetensors file")
    rebuilt = load_checkpoint("smollm2-135m-instruct", cache_dir=tmp_path)
    assert torch.equal(rebuilt.weights["layers.3.q"], checkpoint.weights["layers.3.q"])
    assert written.stat().st_size > 100 << 20


def test_a_changed_file_gets_a_new_cache_entry(tmp_path, checkpoint):
    from llmcell.engine.loader import weight_cache

    source = tmp_path / "model.gguf"
    source.write_bytes(b"x")
    cache = tmp_path / "cache"
    small = {"w": torch.ones(2)}
    first = weight_cache.write(cache, source, small)
    assert torch.equal(weight_cache.read(cache, source)["w"], small["w"])
    os.utime(source, ns=(0, 10**9))  # modified: the old entry no longer applies, and is removed
    assert weight_cache.read(cache, source) is None
    second = weight_cache.write(cache, source, small)
    assert second != first and not first.exists() and second.exists()


def test_an_unwritable_cache_does_not_stop_the_load(tmp_path, capsys):
    from llmcell.engine.loader import weight_cache

    blocker = tmp_path / "file"
    blocker.write_text("")
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x")
    assert weight_cache.write(blocker / "sub", source, {"w": torch.ones(1)}) is None
    assert "not caching" in capsys.readouterr().err
    assert weight_cache.read(None, source) is None and weight_cache.write(None, source, {}) is None


def test_the_cache_is_not_written_onto_a_nearly_full_disk(tmp_path, monkeypatch, capsys):
    import shutil as shutil_module

    from llmcell.engine.loader import weight_cache

    source = tmp_path / "model.gguf"
    source.write_bytes(b"x")
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(weight_cache, "FREE_MARGIN", usage.free)  # nothing would be left
    assert weight_cache.write(tmp_path / "c", source, {"w": torch.ones(4)}) is None
    assert "GB free" in capsys.readouterr().err
    assert not list((tmp_path / "c").glob("*.safetensors"))
