"""Benchmark workloads as token-id prompts: the same inputs go to llmcell and to every peer.

Prompts are chat-templated synthetic user messages of exact token lengths drawn from a seeded
distribution, so runs are repeatable and comparable across engines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORDS = ("time person year way day thing man world life hand part child eye woman place work "
         "week case point government company number group problem fact river garden music "
         "window story science market energy forest history island engine bridge").split()


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    max_tokens: list[int]
    concurrency: str

    @property
    def total_output_tokens(self) -> int:
        return sum(self.max_tokens)

    def to_json(self) -> dict:
        return {"name": self.name, "prompts": self.prompts, "max_tokens": self.max_tokens}


def chat_prompt(tokenizer, render, length: int, rng: random.Random) -> list[int]:
    """A chat-templated prompt of exactly `length` tokens (the user text is cut to fit)."""
    empty = tokenizer.encode(render(""), add_special_tokens=False)
    budget = max(1, length - len(empty))
    words = " ".join(rng.choice(WORDS) for _ in range(budget + 8))
    content = tokenizer.decode(tokenizer.encode(words, add_special_tokens=False)[:budget])
    ids = tokenizer.encode(render(content), add_special_tokens=False)
    while len(ids) > length and content:
        content = content[:-1]
        ids = tokenizer.encode(render(content), add_special_tokens=False)
    return ids + ids[-1:] * (length - len(ids))


def build(tokenizer, render, quick: bool, seed: int = 0) -> list[Workload]:
    rng = random.Random(seed)
    single_out = 64 if quick else 128
    uniform_n, uniform_out = (16, 32) if quick else (32, 128)
    mixed_n = 32 if quick else 256
    mixed_prompt = (32, 256) if quick else (32, 1024)
    mixed_out = (16, 64) if quick else (16, 256)
    single = Workload("single", [chat_prompt(tokenizer, render, 128, rng)], [single_out], "1")
    uniform = Workload("uniform", [chat_prompt(tokenizer, render, 128, rng)
                                   for _ in range(uniform_n)], [uniform_out] * uniform_n,
                       str(uniform_n))
    lens = [rng.randint(*mixed_prompt) for _ in range(mixed_n)]
    outs = [rng.randint(*mixed_out) for _ in range(mixed_n)]
    mixed = Workload("mixed", [chat_prompt(tokenizer, render, n, rng) for n in lens], outs,
                     f"{mixed_n} at once")
    return [single, uniform, mixed]
