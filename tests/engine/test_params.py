"""Sampling parameters and engine configuration reject bad values with a named field."""

from __future__ import annotations

import pytest

from llmcell.config import EngineConfig
from llmcell.engine.params import SamplingParams


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k"), ({"min_p": 1.5}, "min_p"),
    ({"n": 0}, "n"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"logprobs": 21}, "logprobs"),
    ({"stop": [""]}, "stop"), ({"max_tokens": 1.5}, "max_tokens"),
])
def test_invalid_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_stop_accepts_a_single_string():
    assert SamplingParams(stop="END").stop == ("END",)


def test_siblings_get_distinct_seeds():
    p = SamplingParams(n=3, seed=10)
    assert [p.for_sibling(i).seed for i in range(3)] == [10, 11, 12]
    assert p.for_sibling(2).n == 1


@pytest.mark.parametrize("kwargs,field", [
    ({"dtype": "fp8"}, "dtype"), ({"quantization": "int4"}, "quantization"),
    ({"device": "tpu"}, "device"), ({"block_size": 0}, "block_size"),
    ({"kv_cache_memory": -1}, "kv_cache_memory"), ({"threads": -1}, "threads"),
    ({"max_num_seqs": 0}, "max_num_seqs"), ({"model": ""}, "model"),
])
def test_invalid_engine_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)
