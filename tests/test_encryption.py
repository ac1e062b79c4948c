"""Envelope encryption at rest: what is on disk holds no plaintext, a wrong key or a changed,
reordered or shortened file fails with a message that says so, a rotated master key opens the
file while the old one no longer does, and an encrypted model loads and generates as the plain
one does, without its weights ever reaching the weight cache."""

from __future__ import annotations

import os

import pytest

from llmcell import encryption
from llmcell.encryption import DecryptionError, decrypt_file, encrypt_file, read_key, rewrap


def key_file(folder, name: str) -> tuple[str, bytes]:
    path = folder / name
    path.write_text(encryption.new_master_key() + "\n")
    return str(path), read_key(path)


@pytest.mark.parametrize("size", [0, 1, encryption.CHUNK, 2 * encryption.CHUNK + 17])
def test_round_trip_and_no_plaintext_on_disk(tmp_path, size):
    _, key = key_file(tmp_path, "master.key")
    plain = (b"the capital of France is Paris. " * (size // 32 + 1))[:size]
    (tmp_path / "plain").write_bytes(plain)
    encrypt_file(tmp_path / "plain", tmp_path / "sealed", key)
    sealed = (tmp_path / "sealed").read_bytes()
    assert sealed.startswith(encryption.MAGIC) and encryption.is_encrypted(tmp_path / "sealed")
    if size:
        assert b"capital of France" not in sealed
    assert decrypt_file(tmp_path / "sealed", key) == plain


def test_wrong_key_changed_reordered_and_cut_files_fail_clearly(tmp_path):
    _, key = key_file(tmp_path, "a.key")
    _, other = key_file(tmp_path, "b.key")
    plain = os.urandom(2 * encryption.CHUNK + 5)
    (tmp_path / "plain").write_bytes(plain)
    encrypt_file(tmp_path / "plain", tmp_path / "sealed", key)
    with pytest.raises(DecryptionError, match="another master key"):
        decrypt_file(tmp_path / "sealed", other)
    data = bytearray((tmp_path / "sealed").read_bytes())
    flipped = bytearray(data)
    flipped[-10] ^= 1
    (tmp_path / "flipped").write_bytes(flipped)
    with pytest.raises(DecryptionError, match="chunk 2 does not decrypt"):
        decrypt_file(tmp_path / "flipped", key)
    # cut the last chunk off: the one before it did not say it was the last
    header = 8 + 1 + 16 + 8 + 12 + 48
    first_len = int.from_bytes(data[header:header + 4], "big")
    second = header + 16 + first_len
    second_len = int.from_bytes(data[second:second + 4], "big")
    (tmp_path / "cut").write_bytes(data[:second + 16 + second_len])
    with pytest.raises(DecryptionError, match="chunk 1 does not decrypt"):
        decrypt_file(tmp_path / "cut", key)
    with pytest.raises(ValueError, match="does not hold a master key"):
        (tmp_path / "bad.key").write_text("short")
        read_key(tmp_path / "bad.key")


def test_rotation_rewraps_the_data_key_and_keeps_the_body(tmp_path):
    _, old = key_file(tmp_path, "old.key")
    _, new = key_file(tmp_path, "new.key")
    (tmp_path / "plain").write_bytes(b"x" * 1000)
    encrypt_file(tmp_path / "plain", tmp_path / "sealed", old)
    header = 8 + 1 + 16 + 8 + 12 + 48
    body = (tmp_path / "sealed").read_bytes()[header:]
    rewrap(tmp_path / "sealed", old, new)
    assert (tmp_path / "sealed").read_bytes()[header:] == body
    assert decrypt_file(tmp_path / "sealed", new) == b"x" * 1000
    with pytest.raises(DecryptionError):
        decrypt_file(tmp_path / "sealed", old)


def test_an_encrypted_model_generates_as_the_plain_one_and_is_never_cached(tmp_path,
                                                                          chat_prompt_ids):
    from llmcell.engine import LLM, SamplingParams
    from llmcell.engine.loader.registry import resolve_model_path

    path, key = key_file(tmp_path, "model.key")
    source = resolve_model_path("smollm2-135m-instruct")
    encrypt_file(source, tmp_path / "model.gguf.enc", key)
    assert b"llama.attention" not in (tmp_path / "model.gguf.enc").read_bytes()[:1 << 20]
    cache = tmp_path / "cache"
    params = SamplingParams(max_tokens=8, temperature=0.0)
    plain = LLM(model=str(source), kv_cache_memory=32 << 20, dtype="float32",
                weight_cache_dir=None)
    sealed = LLM(model=str(tmp_path / "model.gguf.enc"), model_key_file=path, dtype="float32",
                 kv_cache_memory=32 << 20, weight_cache_dir=str(cache))
    assert [o.outputs[0].token_ids for o in sealed.generate(chat_prompt_ids[:2], params)] == \
        [o.outputs[0].token_ids for o in plain.generate(chat_prompt_ids[:2], params)]
    assert not cache.exists() or not any(cache.iterdir())
    with pytest.raises(ValueError, match="is encrypted"):
        LLM(model=str(tmp_path / "model.gguf.enc"), kv_cache_memory=32 << 20)
    key_file(tmp_path, "wrong.key")
    with pytest.raises(DecryptionError, match="another master key"):
        LLM(model=str(tmp_path / "model.gguf.enc"), model_key_file=str(tmp_path / "wrong.key"),
            kv_cache_memory=32 << 20)
