"""Grammars for guided decoding: a request's `Guided` compiled by llguidance against the model's
vocabulary, cached per grammar, compiled on a thread of its own (never on the engine's step).

The model server uses it to refuse a bad schema with a 400 before queueing; the engine core uses it
to compile what a sequence's matcher starts from (engine/sampling/guided.py copies it per
sequence). llguidance was chosen over xgrammar: no dependencies (xgrammar pulls triton and
transformers), broader JSON-schema coverage, a mask for 32 rows in well under a millisecond
(bench/README.md has the figures).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance as llg
from llguidance.gbnf_to_lark import gbnf_to_lark

from llmcell.protocol.guided import Guided
from llmcell.tokenizer.tokenizer import Tokenizer

JSON_OPTIONS = {"whitespace_flexible": False}
"""Compact JSON (`{"a":1,"b":[2]}`): a small model given room for whitespace may spend its
tokens on it."""
LIMITS = dict(step_lexer_fuel=200_000, step_max_items=50_000, max_grammar_size=200_000,
              max_lexer_states=100_000)
"""Per-request ceilings on grammar size and per-token work, so that one huge or adversarial
grammar fails its own request instead of slowing the batch."""


class GrammarError(ValueError):
    """The guide cannot be compiled: `param` names the request field it came from."""

    def __init__(self, guide: Guided, message: str) -> None:
        super().__init__(f"'{guide.param}': {message}")
        self.param = guide.param


def grammar_text(guide: Guided) -> str:
    """The llguidance grammar (its JSON form) for a guide."""
    if guide.kind in ("json_schema", "json_object"):
        return llg.LLMatcher.grammar_from_json_schema(guide.spec, defaults=JSON_OPTIONS)
    if guide.kind == "regex":
        return llg.LLMatcher.grammar_from_regex(guide.spec)
    if guide.kind == "choice":
        options = " | ".join(json.dumps(c) for c in json.loads(guide.spec))
        return llg.LLMatcher.grammar_from_lark(f"start: {options}")
    source = guide.spec
    if guide.kind == "grammar" and "::=" in source:  # GBNF (llama.cpp, xgrammar): to Lark
        try:
            source = gbnf_to_lark(source)
        except Exception as e:  # the converter's own parse errors
            raise GrammarError(guide, f"not a valid GBNF grammar: {e}") from None
    return llg.LLMatcher.grammar_from_lark(source)


class GrammarCompiler:
    """Compiled grammars (an LLMatcher at its start) for one tokenizer, most recent kept."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, max_cached: int = 128) -> None:
        self._source = tokenizer
        self._vocab_size = vocab_size
        self._llt: llg.LLTokenizer | None = None
        self._cache: OrderedDict[str, llg.LLMatcher] = OrderedDict()
        self._max = max_cached
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmcell-grammar")
        self.compile_seconds: list[float] = []
        """Compile times not yet collected by the metrics (`take_compile_times`)."""

    def tokenizer(self) -> llg.LLTokenizer:
        if self._llt is None:
            tk = self._source
            self._llt = llg.LLTokenizer(tk.to_spec()["tokenizer"], n_vocab=self._vocab_size,
                                        eos_token=sorted(tk.eos_token_ids) or None)
        return self._llt

    def compile(self, guide: Guided) -> llg.LLMatcher:
        """The compiled grammar at its start state (shared: copy it before use); GrammarError
        when it does not compile."""
        try:
            text = grammar_text(guide)
        except GrammarError:
            raise
        except ValueError as e:
            raise GrammarError(guide, str(e)) from None
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        started = time.monotonic()
        matcher = llg.LLMatcher(self.tokenizer(), text, log_level=0,
                                limits=llg.LLParserLimits(**LIMITS))
        if matcher.is_error():
            raise GrammarError(guide, _short(matcher.get_error()))
        with self._lock:
            self.compile_seconds.append(time.monotonic() - started)
            self._cache[text] = matcher
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return matcher

    def submit(self, guide: Guided) -> Future:
        """`compile` on the compiler's thread."""
        return self._pool.submit(self.compile, guide)

    def take_compile_times(self) -> list[float]:
        with self._lock:
            times, self.compile_seconds = self.compile_seconds, []
        return times

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _short(error: str) -> str:
    """llguidance's message without its verbose grammar dump."""
    return error.strip().splitlines()[0][:500] if error.strip() else "the grammar is invalid"
