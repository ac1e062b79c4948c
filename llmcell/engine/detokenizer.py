"""Incremental detokenization and stop strings, one instance per output sequence.

Text is produced by decoding a sliding window of tokens and emitting only what is new, so a
multi-byte character split across tokens is never emitted half (the window waits while the text
ends in U+FFFD) and word-leading spaces come out exactly once. While any stop string could still
complete, the last `len(longest stop) - 1` characters are held back, so streamed text never shows
a stop string (or part of one) that the final text excludes.
"""

from __future__ import annotations

from llmcell.tokenizer.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = (),
                 skip_special_tokens: bool = True, include_stop_str: bool = False) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        self.include_stop_str = include_stop_str
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.tokens: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""
        """All text decoded so far (after truncation at a stop string)."""
        self._emitted = 0
        self.stop_reason: str | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int) -> None:
        """Feed one token; afterwards `stop_reason` is set when a stop string appeared."""
        if self.stop_reason is not None:
            return
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self._prefix_offset : self._read_offset])
        full = self._decode(self.tokens[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return
        new = full[len(prefix) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.tokens)
        search_from = max(0, len(self.text) - self.holdback)
        self.text += new
        for s in self.stop:
            i = self.text.find(s, search_from)
            if i != -1:
                self.text = self.text[: i + len(s)] if self.include_stop_str else self.text[:i]
                self.stop_reason = s
                break

    def resume(self, token_ids, emitted_chars: int) -> str:
        """Take up a sequence another engine began: its tokens, of whose text the client has
        the first `emitted_chars` characters. Returns that text."""
        for t in token_ids:
            self.add_token(t)
        self._emitted = min(emitted_chars, len(self.text))
        return self.text[:self._emitted]

    def take_delta(self, final: bool) -> str:
        """New text safe to show; `final` flushes what was held back for stop strings."""
        end = len(self.text) if final or self.stop_reason else max(
            self._emitted, len(self.text) - self.holdback)
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta
