"""Incremental detokenization: multi-byte characters, spaces, stop strings held back."""

from __future__ import annotations

from llmcell.engine.detokenizer import IncrementalDetokenizer

TEXT = "Héllo wörld — 日本語 text 🙂🙂 with  double  spaces\nand lines. Ünïcödé!"


def stream(tokenizer, ids, **kw):
    d = IncrementalDetokenizer(tokenizer, **kw)
    deltas = []
    for t in ids:
        d.add_token(t)
        deltas.append(d.take_delta(final=False))
        if d.stop_reason:
            break
    deltas.append(d.take_delta(final=True))
    return d, deltas


def test_streamed_text_equals_full_decode(checkpoint):
    tk = checkpoint.tokenizer
    ids = tk.encode(TEXT)
    d, deltas = stream(tk, ids)
    assert "".join(deltas) == tk.decode(ids) == TEXT
    assert all("\ufffd" not in x for x in deltas)


def test_emoji_split_over_tokens_is_never_half_emitted(checkpoint):
    tk = checkpoint.tokenizer
    ids = tk.encode("🙂")
    assert len(ids) > 1  # byte-level BPE splits this emoji over several tokens
    d, deltas = stream(tk, ids)
    assert [x for x in deltas if x] == ["🙂"]


def test_stop_string_across_tokens_is_cut_and_never_streamed(checkpoint):
    tk = checkpoint.tokenizer
    ids = tk.encode("The answer is forty-two, said the computer.")
    d, deltas = stream(tk, ids, stop=("forty-two",))
    assert d.stop_reason == "forty-two"
    assert "".join(deltas) == "The answer is "
    assert not any("forty" in x for x in deltas)


def test_stop_string_kept_when_asked(checkpoint):
    tk = checkpoint.tokenizer
    ids = tk.encode("alpha beta gamma delta")
    d, deltas = stream(tk, ids, stop=("gamma",), include_stop_str=True)
    assert "".join(deltas) == "alpha beta gamma"


def test_special_tokens_skipped(checkpoint):
    tk = checkpoint.tokenizer
    ids = tk.encode("<|im_start|>assistant\nHi<|im_end|>")
    _, deltas = stream(tk, ids)
    assert "".join(deltas) == "assistant\nHi"
