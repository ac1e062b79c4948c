"""LoRA adapters in the engine against transformers + PEFT on the same weights, in fp32: greedy
tokens equal PEFT's, and a mixed batch gives each request the tokens it gets alone."""

from __future__ import annotations

import pytest
import torch

from llmcell.engine import LLM, SamplingParams
from llmcell.protocol.kv_events import prompt_block_keys
from llmcell.protocol.lora import AdapterRef, cache_root

pytest.importorskip("transformers")
pytest.importorskip("peft")
from tests.engine.hf_reference import build_hf_model  # noqa: E402
from tests.engine.lora.peft_adapters import make_adapter  # noqa: E402

NEW_TOKENS = 24
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    return build_hf_model(checkpoint)


@pytest.fixture(scope="module")
def adapters(hf_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "all": make_adapter(hf_model, root / "all", ALL, 8, seed=1),
        "qv": make_adapter(hf_model, root / "qv", ["q_proj", "v_proj"], 16, seed=2, rslora=True,
                           scale=0.1),
        "mlp": make_adapter(hf_model, root / "mlp", ["gate_proj", "down_proj"], 4, seed=3),
    }


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(checkpoint=checkpoint, dtype="float32", kv_cache_memory=256 << 20, max_loras=2)


def peft_greedy(hf_model, adapter_dir, prompts: list[list[int]]) -> list[list[int]]:
    from peft import PeftModel

    model = PeftModel.from_pretrained(hf_model, str(adapter_dir))
    outs = []
    try:
        with torch.inference_mode():
            for ids in prompts:
                out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=NEW_TOKENS,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)
                outs.append(out[0, len(ids):].tolist())
    finally:
        model.unload()
    return outs


GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)


@pytest.mark.parametrize("name", ["all", "qv"])
def test_greedy_tokens_equal_peft(llm, hf_model, adapters, chat_prompt_ids, name):
    prompts = chat_prompt_ids[:5]
    ref = peft_greedy(hf_model, adapters[name], prompts)
    ref_base = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    ours = llm.generate(prompts, GREEDY, lora_request=AdapterRef(name, str(adapters[name])))
    for i, (o, want) in enumerate(zip(ours, ref)):
        assert o.outputs[0].token_ids == want, f"prompt {i} diverged from PEFT"
    assert [o.outputs[0].token_ids for o in ours] != ref_base  # the adapter changes the output


def test_mixed_batch_equals_alone(llm, adapters, chat_prompt_ids):
    """Base, three adapters (one more than max_loras=2: one waits for a slot) and plain requests
    in one batch: each request gets the tokens it gets alone."""
    refs = [None, AdapterRef("all", str(adapters["all"])), None,
            AdapterRef("qv", str(adapters["qv"])), AdapterRef("mlp", str(adapters["mlp"])),
            AdapterRef("all", str(adapters["all"]))]
    prompts = [chat_prompt_ids[i % len(chat_prompt_ids)] for i in range(len(refs))]
    alone = [llm.generate([p], GREEDY, lora_request=r)[0].outputs[0].token_ids
             for p, r in zip(prompts, refs)]
    mixed = llm.generate(prompts, GREEDY, lora_request=refs)
    assert [o.outputs[0].token_ids for o in mixed] == alone
    assert alone[0] != alone[1] and alone[1] != alone[3]
    stats = {name: (loads, evictions) for name, loads, evictions, _, _ in llm.core.stats().adapters}
    assert set(stats) == {"all", "qv", "mlp"}
    assert sum(e for _, e in stats.values()) >= 1  # three adapters through two slots


def test_prefix_cache_is_per_adapter(llm, adapters, chat_prompt_ids):
    prompt = llm.tokenizer.encode("A lighthouse keeper kept a logbook of every ship that passed "
                                  "the rocks at night, and of the weather, and of the birds. " * 2)
    assert len(prompt) > 32  # several full blocks that no earlier test ran
    ref = AdapterRef("all", str(adapters["all"]))
    assert llm.generate([prompt], GREEDY)[0].metrics.num_cached_prompt_tokens == 0
    with_adapter = llm.generate([prompt], GREEDY, lora_request=ref)[0]
    assert with_adapter.metrics.num_cached_prompt_tokens == 0  # the base's blocks are not its
    # the keys a gateway computes for the adapter (from its root) are the ones the engine stored
    bm = llm.core.block_manager
    keys = prompt_block_keys(prompt, bm.block_size, root=cache_root("all"))
    assert keys and all(k in bm._cached for k in keys)
    assert set(keys).isdisjoint(prompt_block_keys(prompt, bm.block_size))  # base's are others
    again = llm.generate([prompt], GREEDY, lora_request=ref)[0]
    assert again.metrics.num_cached_prompt_tokens > 0
    assert again.outputs[0].token_ids == with_adapter.outputs[0].token_ids


def test_bad_adapter_is_refused(llm, tmp_path, adapters):
    with pytest.raises(ValueError, match="not a PEFT adapter directory"):
        llm.generate(["hi"], GREEDY, lora_request=AdapterRef("nope", str(tmp_path)))
    # the engine keeps serving the others
    out = llm.generate(["hi"], GREEDY, lora_request=AdapterRef("all", str(adapters["all"])))
    assert len(out[0].outputs[0].token_ids) == NEW_TOKENS


def test_rank_above_the_engines_limit_is_refused(llm, hf_model, tmp_path):
    big = make_adapter(hf_model, tmp_path / "big", ["q_proj"], 32, seed=4)
    with pytest.raises(ValueError, match="rank 32, above this engine's max_lora_rank=16"):
        llm.generate(["hi"], GREEDY, lora_request=AdapterRef("big", str(big)))
