"""The sampler: greedy rows take the argmax, random rows draw from the filtered distribution,
a seeded row draws the same tokens whatever else is in the batch, penalties and logprobs follow
OpenAI's and vLLM's definitions."""

from __future__ import annotations

import math

import pytest
import torch

from llmcell.engine.sampling.sampler import Sampler, SamplingRow
from llmcell.protocol.sampling import SamplingParams

CPU = torch.device("cpu")


def row(seq_id: int = 0, prompt=(1,), output=(), **params) -> SamplingRow:
    return SamplingRow(seq_id, SamplingParams(**params), list(prompt), list(output))


def draws(sampler: Sampler, logits: torch.Tensor, times: int, **params) -> list[int]:
    return [sampler(logits[None], [row(i, **params)])[0].token_id for i in range(times)]


LOGITS = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))


def test_greedy_rows_take_the_argmax_beside_random_rows():
    logits = torch.stack([LOGITS, LOGITS.flip(0)])
    out = Sampler(CPU)(logits, [row(0, temperature=0.0), row(1, temperature=0.0)])
    assert [t.token_id for t in out] == [0, 3]
    out = Sampler(CPU)(logits, [row(0, temperature=0.0), row(1, temperature=1.0, seed=1)])
    assert out[0].token_id == 0


def test_random_draws_follow_the_distribution():
    counts = torch.bincount(torch.tensor(draws(Sampler(CPU, seed=3), LOGITS, 4000)), minlength=4)
    freq = counts.double() / counts.sum()
    assert torch.allclose(freq, LOGITS.exp().double(), atol=0.03), freq


@pytest.mark.parametrize("params,allowed", [
    ({"top_k": 2}, {0, 1}), ({"top_p": 0.6}, {0, 1}), ({"top_p": 0.5}, {0}),
    ({"min_p": 0.5}, {0, 1}), ({"top_k": 1}, {0}),
])
def test_filters_keep_only_the_allowed_tokens(params, allowed):
    got = set(draws(Sampler(CPU, seed=5), LOGITS, 400, **params))
    assert got == allowed


def test_a_seeded_row_draws_the_same_tokens_whatever_else_is_in_the_batch():
    logits = torch.zeros(3, 50)  # uniform: any batch-dependence would show at once
    alone = [Sampler(CPU)(logits[:1], [row(7, seed=42)])[0].token_id]
    batched = Sampler(CPU)(logits, [row(1, seed=1), row(7, seed=42), row(2)])
    assert batched[1].token_id == alone[0]
    s = Sampler(CPU)
    first = [s(logits[:1], [row(9, seed=11)])[0].token_id for _ in range(5)]
    s2 = Sampler(CPU)
    again = [s2(logits[:1], [row(9, seed=11)])[0].token_id for _ in range(5)]
    assert first == again and len(set(first)) > 1  # one generator per sequence, advancing


def test_penalties_lower_tokens_already_seen():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    greedy = {"temperature": 0.0}
    assert Sampler(CPU)(logits.clone(), [row(output=(0, 0), **greedy)])[0].token_id == 0
    for penalty in ({"presence_penalty": 0.5}, {"frequency_penalty": 0.1},
                    {"repetition_penalty": 1.2}):
        out = Sampler(CPU)(logits.clone(), [row(prompt=(2,), output=(0, 0), **greedy,
                                                **penalty)])
        assert out[0].token_id == 1, penalty


def test_logprobs_come_from_the_raw_distribution():
    logits = LOGITS[None].clone()
    out = Sampler(CPU)(logits, [row(temperature=0.0, logprobs=2, presence_penalty=2.0,
                                    output=(0,))])[0]
    raw = torch.log_softmax(LOGITS, -1)
    assert out.token_id == 1  # the penalty moved the choice
    assert math.isclose(out.logprob, float(raw[1]), rel_tol=1e-5)  # but not the reported logprob
    assert [t for t, _ in out.top] == [0, 1]
