"""Offline API: `LLM(...).generate(prompts, params)` runs a batch to completion and returns it."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence as Seq

from llmcell.config.engine import EngineConfig
from llmcell.engine.core import EngineCore
from llmcell.engine.parallel.tensor import TensorParallel
from llmcell.tokenizer.chat_template import render_chat
from llmcell.engine.loader.weights import Checkpoint
from llmcell.engine.outputs import RequestOutput
from llmcell.protocol.lora import AdapterRef
from llmcell.protocol.sampling import SamplingParams

Prompt = str | list[int]


class LLM:
    def __init__(self, model: str | None = None, config: EngineConfig | None = None,
                 checkpoint: Checkpoint | None = None, tp: TensorParallel | None = None,
                 **overrides):
        config = config or EngineConfig()
        if model is not None:
            overrides["model"] = model
        if overrides:
            config = replace(config, **overrides)
        self.core = EngineCore(config, checkpoint, tp)
        self.tokenizer = self.core.tokenizer

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else self.tokenizer.encode(prompt)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return render_chat(self.tokenizer.chat_template, messages, add_generation_prompt,
                           self.tokenizer.bos_token, self.tokenizer.eos_token)

    def generate(self, prompts: Prompt | Seq[Prompt],
                 params: SamplingParams | Seq[SamplingParams] | None = None,
                 lora_request: AdapterRef | Seq[AdapterRef | None] | None = None
                 ) -> list[RequestOutput]:
        """`lora_request`: the LoRA adapter every prompt runs with, or one per prompt (None:
        the base model)."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts
                                        and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = params or SamplingParams()
        plist = list(params) if not isinstance(params, SamplingParams) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(plist)} sampling parameter sets")
        loras = (list(lora_request) if isinstance(lora_request, (list, tuple))
                 else [lora_request] * len(prompts))
        if len(loras) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(loras)} LoRA requests")
        ids = [f"offline-{i}" for i in range(len(prompts))]
        for rid, prompt, p, lora in zip(ids, prompts, plist, loras):
            self.core.add_request(rid, self.encode_prompt(prompt), p, adapter=lora)
        final: dict[str, RequestOutput] = {}
        while self.core.has_work():
            for out in self.core.step():
                if out.finished:
                    final[out.request_id] = out
            for rid, reason in self.core.take_refused():
                raise ValueError(f"{rid}: {reason}")
        return [final[rid] for rid in ids]

    def chat(self, conversations: list[dict] | list[list[dict]],
             params: SamplingParams | None = None) -> list[RequestOutput]:
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        prompts = [self.tokenizer.encode(self.apply_chat_template(c), add_special_tokens=False)
                   for c in conversations]
        return self.generate(prompts, params)
