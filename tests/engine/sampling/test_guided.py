"""Guided decoding in the engine on the real model: a guided row in a batch of free ones changes
nothing for them, a guided request gives the same tokens alone and in a batch, a sequence resumed
mid-answer keeps to its grammar, and a grammar that fails compiling refuses its request only."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmcell.engine import LLM, SamplingParams
from llmcell.engine.outputs import Resume
from llmcell.protocol.guided import Guided, schema_guide

SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 20},
    "days": {"type": "array", "items": {"enum": ["mon", "tue", "wed"]}, "maxItems": 3}},
    "required": ["city", "days"], "additionalProperties": False}
PROMPTS = ["Where shall we meet? Answer in JSON:", "The capital of France is",
           "List three colours:", "JSON for a trip:"]


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(checkpoint=checkpoint, kv_cache_memory=256 << 20, dtype="float32")


def _ids(outs):
    return [o.outputs[0].token_ids for o in outs]


def test_mixed_batch_equals_runs_alone(llm):
    guided = SamplingParams(max_tokens=40, temperature=0, guided=schema_guide(SCHEMA, "x"))
    free = SamplingParams(max_tokens=24, temperature=0)
    plan = [guided, free, guided, free]
    batch = llm.generate(PROMPTS, plan)
    alone = [llm.generate([p], q)[0] for p, q in zip(PROMPTS, plan)]
    assert _ids(batch) == _ids(alone)
    for out in (batch[0], batch[2]):
        jsonschema.validate(json.loads(out.outputs[0].text), SCHEMA)
    assert not batch[1].outputs[0].text.startswith("{")


def test_seeded_guided_sampling_is_reproducible(llm):
    p = SamplingParams(max_tokens=40, temperature=1.0, seed=7, guided=schema_guide(SCHEMA, "x"))
    a, b = llm.generate(PROMPTS[:1], p), llm.generate(PROMPTS[:1] * 3, p)
    assert _ids(a)[0] == _ids(b)[0] == _ids(b)[2]


def test_resumed_sequence_keeps_to_the_grammar(llm):
    p = SamplingParams(max_tokens=40, temperature=0, guided=schema_guide(SCHEMA, "x"))
    prompt = llm.tokenizer.encode(PROMPTS[0])
    whole = llm.generate([prompt], p)[0].outputs[0]
    core = llm.core
    head = whole.token_ids[:5]
    core.add_request("resumed", prompt, p, resume=Resume(tuple(head), 0))
    final = None
    while core.has_work():
        for out in core.step():
            if out.finished:
                final = out
    assert final.outputs[0].token_ids == whole.token_ids


def test_a_failing_grammar_refuses_only_its_request(llm):
    bad = SamplingParams(max_tokens=4, guided=Guided("regex", "(unclosed"))
    with pytest.raises(ValueError, match="regex"):
        llm.generate(PROMPTS[:1], bad)
    assert llm.generate(PROMPTS[:1], SamplingParams(max_tokens=3))[0].outputs[0].token_ids
