"""Workloads for `llmcell bench`: what each request asks, decided before any is sent.

- synthetic: prompts of random words with lengths drawn around a mean (about one token per word),
  output lengths likewise;
- shared-prefix: N long system prompts (~`prefix_tokens` each) shared by many users, each with a
  short question of their own: what prefix caching and prefix-aware routing are for;
- multi-turn: tenants, each with a system prompt of its own (optionally after a preamble every
  tenant shares, as a platform's common instructions), and conversations of several turns, each
  turn carrying the answers so far (bench/routing.py: what KV-aware routing is for);
- a JSONL file: one request per line, {"prompt": str} or {"messages": [...]}, optional
  "max_tokens".
Everything is seeded, so two runs send the same requests.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

WORDS = ("time people way year day thing man world life hand part child eye woman place work "
         "week case point number group problem fact river stone cloud garden market music "
         "window letter engine answer question story paper light color sound water field "
         "system city morning planet forest road bridge school doctor table ocean summer").split()


@dataclass(frozen=True)
class BenchRequest:
    messages: list[dict]
    max_tokens: int
    prefix_id: int | None = None


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n_words)))


def _length(rng: random.Random, mean: int) -> int:
    """Uniform in [mean/2, 3*mean/2]: spread enough to exercise batching, bounded."""
    return max(1, int(rng.uniform(0.5, 1.5) * mean))


def synthetic(n: int, prompt_tokens: int, output_tokens: int, seed: int) -> list[BenchRequest]:
    rng = random.Random(seed)
    return [BenchRequest([{"role": "user", "content": "Continue this text: " +
                           _text(rng, _length(rng, prompt_tokens))}],
                         _length(rng, output_tokens)) for _ in range(n)]


def shared_prefix(n: int, prefixes: int, prefix_tokens: int, output_tokens: int,
                  seed: int) -> list[BenchRequest]:
    rng = random.Random(seed)
    systems = [f"You are assistant number {i}. Background notes: " + _text(rng, prefix_tokens)
               for i in range(prefixes)]
    out = []
    for _ in range(n):
        i = rng.randrange(prefixes)
        question = f"In one sentence, what is a {rng.choice(WORDS)}?"
        out.append(BenchRequest([{"role": "system", "content": systems[i]},
                                 {"role": "user", "content": question}],
                                _length(rng, output_tokens), prefix_id=i))
    return out


@dataclass(frozen=True)
class Conversation:
    tenant: int
    system: str
    questions: list[str]
    """One user message per turn, asked in order."""
    max_tokens: int


def multi_turn(tenants: int, conversations: int, turns: int, system_tokens: int,
               shared_tokens: int, output_tokens: int, seed: int) -> list[Conversation]:
    """`conversations` per tenant, shuffled; each tenant's system prompt is ~`system_tokens`
    words, of which the first ~`shared_tokens` are the same for every tenant."""
    if not 0 <= shared_tokens <= system_tokens:
        raise ValueError(f"shared_tokens={shared_tokens} must be in [0, {system_tokens}]")
    rng = random.Random(seed)
    preamble = ("Rules every assistant on this platform follows: " + _text(rng, shared_tokens)
                + " ") if shared_tokens else ""
    systems = [preamble + f"You are the assistant of tenant {t}. Tenant notes: "
               + _text(rng, system_tokens - shared_tokens) for t in range(tenants)]
    out = [Conversation(t, systems[t], [f"Turn {k + 1}: in one sentence, what is a "
                                        f"{rng.choice(WORDS)} to {rng.choice(WORDS)}?"
                                        for k in range(turns)], output_tokens)
           for t in range(tenants) for _ in range(conversations)]
    rng.shuffle(out)
    return out


def from_jsonl(path: Path, n: int, output_tokens: int) -> list[BenchRequest]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        if isinstance(row.get("messages"), list):
            messages = row["messages"]
        elif isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            raise ValueError(f"{path}:{number}: needs a 'prompt' string or a 'messages' list")
        out.append(BenchRequest(messages, int(row.get("max_tokens", output_tokens))))
    if not out:
        raise ValueError(f"{path}: no requests in the file")
    return [out[i % len(out)] for i in range(n)]
