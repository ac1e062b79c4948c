"""Sampler: one next token per row of logits, honouring each row's own sampling parameters.

Greedy rows take the argmax. Random rows divide by temperature, apply top-k, top-p and min-p, and
draw with the exponential race (argmax of p / E, E ~ Exp(1)), which equals sampling from p. A row
with a seed draws E from its own generator, seeded once per sequence, so its text does not depend
on what else is in the batch. Logprobs come from the model's raw distribution (before penalties and
temperature), as OpenAI and vLLM report them.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import torch

from llmcell.engine.sampling.guided import GuidedRows
from llmcell.engine.scheduler.plan import SampledToken
from llmcell.protocol.sampling import SamplingParams


def exponential_(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill `t` with Exp(1) draws as -ln(U), U ~ uniform[0, 1): the same law as torch's
    `exponential_`, several times cheaper on CPU. U = 0 gives +inf, which only ever loses the
    race."""
    return t.uniform_(generator=generator).log_().neg_()


@dataclass
class SamplingRow:
    seq_id: int
    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    grammar: object | None = None
    """The compiled grammar the row's tokens must follow (engine/sampling/grammar.py)."""
    eos_token_ids: frozenset[int] = frozenset()


class Sampler:
    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        self._generators: dict[int, torch.Generator] = {}
        self._shared = torch.Generator(device=device)
        self._shared.manual_seed(seed)
        self.guided = GuidedRows()

    def release(self, seq_ids: list[int]) -> None:
        for s in seq_ids:
            self._generators.pop(s, None)
        self.guided.release(seq_ids)

    def _generator(self, row: SamplingRow, vocab: int) -> torch.Generator:
        """A seeded sequence's generator, made at its first draw. A sequence resumed from
        another engine already has tokens then: their draws are replayed, so it goes on as the
        first engine would have."""
        g = self._generators.get(row.seq_id)
        if g is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(row.params.seed & 0xFFFF_FFFF_FFFF_FFFF)
            if row.output_token_ids:
                scratch = torch.empty(vocab, device=self.device)
                for _ in row.output_token_ids:
                    exponential_(scratch, g)
            self._generators[row.seq_id] = g
        return g

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow],
                 masks: Future | None = None) -> list[SampledToken]:
        """`masks`: the guided rows' masks, begun with `guided.begin(rows)`."""
        n = logits.shape[0]
        want_logprobs = [r.params.logprobs for r in rows]
        raw_logprobs = None
        if any(k is not None for k in want_logprobs):
            raw_logprobs = torch.log_softmax(logits, dim=-1)
        if any(r.params.has_penalties for r in rows):
            logits = logits.clone()
            for i, r in enumerate(rows):
                if r.params.has_penalties:
                    self._apply_penalties(logits[i], r)
        if masks is not None:
            logits = self.guided.apply(logits, masks)

        greedy = [r.params.greedy for r in rows]
        tokens = torch.empty(n, dtype=torch.long, device=logits.device)
        if all(greedy):
            tokens = logits.argmax(dim=-1)
        else:
            g_idx = [i for i in range(n) if greedy[i]]
            r_idx = [i for i in range(n) if not greedy[i]]
            if g_idx:
                gi = torch.tensor(g_idx, device=logits.device)
                tokens[gi] = logits[gi].argmax(dim=-1)
            ri = torch.tensor(r_idx, device=logits.device)
            tokens[ri] = self._sample_random(logits[ri], [rows[i] for i in r_idx])

        token_list = tokens.tolist()
        if masks is not None:
            for r, t in zip(rows, token_list):
                if r.grammar is not None:
                    self.guided.advance(r.seq_id, t)
        out = [SampledToken(t) for t in token_list]
        if raw_logprobs is not None:
            for i, k in enumerate(want_logprobs):
                if k is None:
                    continue
                out[i].logprob = float(raw_logprobs[i, token_list[i]])
                if k > 0:
                    vals, ids = raw_logprobs[i].topk(k)
                    out[i].top = list(zip(ids.tolist(), vals.tolist()))
        return out

    def _apply_penalties(self, row_logits: torch.Tensor, r: SamplingRow) -> None:
        p = r.params
        vocab = row_logits.shape[0]
        if r.output_token_ids and (p.presence_penalty or p.frequency_penalty):
            out_ids = torch.tensor(r.output_token_ids, device=row_logits.device)
            counts = torch.bincount(out_ids, minlength=vocab)[:vocab].to(row_logits.dtype)
            row_logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(r.prompt_token_ids) | set(r.output_token_ids)),
                                dtype=torch.long, device=row_logits.device)
            seen = seen[seen < vocab]
            vals = row_logits[seen]
            row_logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty,
                                           vals * p.repetition_penalty)

    def _sample_random(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        temps = torch.tensor([r.params.temperature for r in rows], device=logits.device)
        logits = logits / temps.unsqueeze(1)
        if any(r.params.top_k > 0 for r in rows):
            vocab = logits.shape[1]
            ks = torch.tensor([r.params.top_k if r.params.top_k > 0 else vocab for r in rows],
                              device=logits.device)
            kth = logits.topk(int(ks.max().clamp(max=vocab)), dim=-1).values
            kth = kth.gather(1, (ks.clamp(max=kth.shape[1]) - 1).unsqueeze(1))
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if any(r.params.top_p < 1.0 for r in rows):
            top_p = torch.tensor([r.params.top_p for r in rows], device=logits.device)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            cum = sorted_p.cumsum(dim=-1)
            drop_sorted = (cum - sorted_p) >= top_p.unsqueeze(1)  # keep the token that crosses p
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            probs = probs.masked_fill(drop, 0.0)
        if any(r.params.min_p > 0.0 for r in rows):
            min_p = torch.tensor([r.params.min_p for r in rows], device=logits.device)
            floor = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
            probs = probs.masked_fill(probs < floor, 0.0)
        race = torch.empty_like(probs)
        seeded = [i for i, r in enumerate(rows) if r.params.seed is not None]
        if len(seeded) < len(rows):
            exponential_(race, self._shared)
        for i in seeded:
            exponential_(race[i], self._generator(rows[i], race.shape[1]))
        return (probs / race).argmax(dim=-1)
