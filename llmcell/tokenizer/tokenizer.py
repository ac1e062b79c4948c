"""Tokenizer: text <-> token ids, built from a GGUF file's vocabulary or a `tokenizer.json`, and
passed between processes as a spec (`to_spec`, `from_spec`).

GGUF files of the `gpt2` tokenizer family (byte-level BPE: SmolLM, Llama 3, Qwen2, ...) carry the
vocab and merges; the pre-tokenizer follows `tokenizer.ggml.pre` as llama.cpp does. Control and
user-defined tokens become special tokens so that chat markers tokenize as one id.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTROL, _USER_DEFINED = 3, 4


def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("smollm", "starcoder", "refact"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in ("llama-bpe", "llama3", "smaug-bpe"):
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
        return pre_tokenizers.Sequence([split, byte_level])
    if pre in ("qwen2", "deepseek-r1-qwen"):
        split = pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False)
        return pre_tokenizers.Sequence([split, byte_level])
    if pre in ("gpt2", "default", ""):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raise ValueError(f"unsupported GGUF pre-tokenizer {pre!r}")


class Tokenizer:
    def __init__(
        self,
        tokenizer: HFTokenizer,
        bos_token_id: int | None,
        eos_token_ids: frozenset[int],
        add_bos: bool,
        chat_template: str | None,
    ) -> None:
        self._tk = tokenizer
        self.bos_token_id = bos_token_id
        self.eos_token_ids = eos_token_ids
        self.add_bos = add_bos
        self.chat_template = chat_template
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.special_ids = frozenset(
            i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        )

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, gguf, source: Path) -> "Tokenizer":
        kind = gguf.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(
                f"{source}: tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' is); "
                "use the model's Hugging Face directory instead"
            )
        tokens = gguf.require("tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in gguf.require("tokenizer.ggml.merges")]
        types = gguf.get("tokenizer.ggml.token_type")
        vocab = {tok: i for i, tok in enumerate(tokens)}
        tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                                    ignore_merges=gguf.get("tokenizer.ggml.pre") == "llama-bpe"))
        tk.pre_tokenizer = _pre_tokenizer(str(gguf.get("tokenizer.ggml.pre", "gpt2")))
        tk.decoder = decoders.ByteLevel()
        if types is not None:
            special = [AddedToken(tokens[i], special=True, normalized=False)
                       for i, t in enumerate(types) if int(t) in (_CONTROL, _USER_DEFINED)]
            tk.add_special_tokens(special)
        eos = gguf.get("tokenizer.ggml.eos_token_id")
        eos_ids = {int(eos)} if eos is not None else set()
        eot = gguf.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            eos_ids.add(int(eot))
        bos = gguf.get("tokenizer.ggml.bos_token_id")
        return cls(tk, None if bos is None else int(bos), frozenset(eos_ids),
                   bool(gguf.get("tokenizer.ggml.add_bos_token", False)),
                   gguf.get("tokenizer.chat_template"))

    @classmethod
    def from_hf_dir(cls, directory: Path, eos_from_config: list[int]) -> "Tokenizer":
        import json

        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing (a Hugging Face model directory needs tokenizer.json)")
        tk = HFTokenizer.from_file(str(path))
        tk.no_padding()
        tk.no_truncation()
        cfg_path = directory / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}

        def token_id(entry) -> int | None:
            if isinstance(entry, dict):
                entry = entry.get("content")
            return tk.token_to_id(entry) if isinstance(entry, str) else None

        eos_ids = set(eos_from_config)
        if (e := token_id(cfg.get("eos_token"))) is not None:
            eos_ids.add(e)
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja = directory / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text()
        # tokenizer.json's post-processor already adds BOS where the model wants it
        return cls(tk, token_id(cfg.get("bos_token")), frozenset(eos_ids), False, template)

    # ---- use -----------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._tk.encode(text, add_special_tokens=add_special_tokens).ids
        if (add_special_tokens and self.add_bos and self.bos_token_id is not None
                and (not ids or ids[0] != self.bos_token_id)):
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tk.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        return self._tk.id_to_token(token_id) or ""

    def token_text(self, token_id: int) -> str:
        """The token's text as a user sees it (byte-level markers decoded)."""
        return self._tk.decode([token_id], skip_special_tokens=False)

    def save(self, path) -> None:
        self._tk.save(str(path))

    def to_spec(self) -> dict:
        """Everything needed to tokenize as this tokenizer does, as JSON (a model server hands it
        to the gateways)."""
        return {"tokenizer": self._tk.to_str(), "bos_token_id": self.bos_token_id,
                "eos_token_ids": sorted(self.eos_token_ids), "add_bos": self.add_bos,
                "chat_template": self.chat_template}

    @classmethod
    def from_spec(cls, spec: dict) -> "Tokenizer":
        """The inverse of `to_spec`; ValueError for anything that is not one."""
        try:
            tk = HFTokenizer.from_str(spec["tokenizer"])
            bos = spec.get("bos_token_id")
            return cls(tk, None if bos is None else int(bos),
                       frozenset(int(i) for i in spec.get("eos_token_ids", [])),
                       bool(spec.get("add_bos", False)), spec.get("chat_template"))
        except Exception as e:  # KeyError, TypeError, or the tokenizers library's own
            raise ValueError(f"not a tokenizer spec: {e}") from None

    def token_to_id(self, token: str) -> int | None:
        return self._tk.token_to_id(token)

    @property
    def bos_token(self) -> str:
        return "" if self.bos_token_id is None else self.id_to_token(self.bos_token_id)

    @property
    def eos_token(self) -> str:
        return self.id_to_token(min(self.eos_token_ids)) if self.eos_token_ids else ""
