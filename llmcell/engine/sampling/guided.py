"""Guided decoding in the sampler: each guided sequence's llguidance matcher, the batch's token
bitmask, and the mask applied to the logits before a token is drawn.

The masks of a step are computed on a worker thread while the model runs (llguidance drops the
GIL), for all guided rows at once (`LLExecutor`); after sampling, each matcher consumes its token.
A sequence resumed from another replica replays its tokens into a fresh matcher first. A matcher
that has finished or failed allows only the end-of-sequence tokens, so the sequence ends.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import llguidance as llg
import numpy as np
import torch
from llguidance.torch import fill_next_token_bitmask_par



class GuidedRows:
    def __init__(self) -> None:
        self._matchers: dict[int, llg.LLMatcher] = {}
        self._executor: llg.LLExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.failures = 0
        """Matchers that went into an error state (a token outside the grammar)."""

    def release(self, seq_ids: list[int]) -> None:
        for s in seq_ids:
            self._matchers.pop(s, None)

    def _matcher(self, seq_id: int, grammar: llg.LLMatcher, generated: list[int]) -> llg.LLMatcher:
        m = self._matchers.get(seq_id)
        if m is None:
            m = grammar.deep_copy()
            if generated and not m.consume_tokens(generated):
                self.failures += 1
            self._matchers[seq_id] = m
        return m

    def begin(self, rows: list, vocab_size: int) -> Future | None:
        """Start computing the masks of the guided rows; None when no row is guided."""
        guided = [(i, r) for i, r in enumerate(rows) if r.grammar is not None]
        if not guided:
            return None
        matchers = [(self._matcher(r.seq_id, r.grammar, r.output_token_ids), k)
                    for k, (_, r) in enumerate(guided)]
        row_ids = [i for i, _ in guided]
        eos = [sorted(r.eos_token_ids) for _, r in guided]
        mask = torch.full((len(guided), (vocab_size + 31) // 32), -1, dtype=torch.int32)
        if self._pool is None:
            self._executor = llg.LLExecutor(num_threads=1)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmcell-mask")

        def fill() -> tuple[torch.Tensor, list[int]]:
            live = [(m, i) for m, i in matchers if not (m.is_stopped() or m.is_error())]
            if live:
                fill_next_token_bitmask_par(self._executor, live, mask)
            done = [k for m, k in matchers if m.is_stopped() or m.is_error()]
            return row_ids, mask, done, eos

        return self._pool.submit(fill)

    def apply(self, logits: torch.Tensor, pending: Future) -> torch.Tensor:
        """`logits` (changed in place) with the tokens each guided row may not take at -inf."""
        row_ids, mask, done, eos = pending.result()
        vocab = logits.shape[1]
        bits = np.unpackbits(mask.numpy().view(np.uint8), axis=1, bitorder="little")
        banned = torch.from_numpy(bits[:, :vocab]).eq(0)
        for k in done:
            banned[k] = True
            banned[k, eos[k]] = False
        banned = banned.to(logits.device)
        if len(row_ids) == logits.shape[0]:  # every row guided: in place
            return logits.masked_fill_(banned, float("-inf"))
        rows = torch.tensor(row_ids, device=logits.device)
        logits[rows] = logits[rows].masked_fill(banned, float("-inf"))
        return logits

    def advance(self, seq_id: int, token: int) -> None:
        m = self._matchers.get(seq_id)
        if m is not None and not m.is_stopped() and not m.is_error():
            if not m.consume_token(token):
                self.failures += 1
