"""The model server's check of a guided request before it is queued: its schema, regex or grammar
compiled against the model's vocabulary on a worker thread (cached per grammar), so that one that
cannot compile is a 400 naming its field and never reaches the engine. Counts guided requests,
compile times and tool-call parse failures."""

from __future__ import annotations

import asyncio

from llmcell.engine.sampling.grammar import GrammarCompiler, GrammarError
from llmcell.protocol.errors import invalid
from llmcell.protocol.guided import Guided
from llmcell.tokenizer.tokenizer import Tokenizer

COMPILE_TIMEOUT = 10.0
"""Seconds a grammar may take to compile before its request is refused."""


class GuideChecker:
    def __init__(self, tokenizer: Tokenizer, vocab_size: int, metrics, model: str) -> None:
        self._compiler = GrammarCompiler(tokenizer, vocab_size)
        self._metrics = metrics
        self._model = model

    async def check(self, guide: Guided | None) -> None:
        if guide is None:
            return
        self._metrics.guided.labels(self._model, guide.kind).inc()
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._compiler.submit(guide)),
                                   COMPILE_TIMEOUT)
        except GrammarError as e:
            self._metrics.grammar_errors.labels(self._model).inc()
            raise invalid(str(e), e.param) from None
        except asyncio.TimeoutError:
            self._metrics.grammar_errors.labels(self._model).inc()
            raise invalid(f"'{guide.param}' took longer than {COMPILE_TIMEOUT:g} s to compile; "
                          "simplify it", guide.param) from None
        finally:
            for seconds in self._compiler.take_compile_times():
                self._metrics.grammar_compile.labels(self._model).observe(seconds)

    def tool_failures(self, count: int) -> None:
        if count:
            self._metrics.tool_parse_failures.labels(self._model).inc(count)
