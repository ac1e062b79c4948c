"""What a routing policy needs of one OpenAI request, computed the same way wherever a cell routes
it (the gateway, gateway/openai_routes.py, and the endpoint picker, llmcell/epp/), so that both
choose the same replica: the prefix key (`prefix_affinity`) and, with a KV follower, how much of
the prompt each replica caches (`kv_affinity`)."""

from __future__ import annotations

from typing import Mapping

from llmcell.gateway.kv_follow import KVFollower
from llmcell.router.policies import hash64


def prefix_text(body: dict, chat: bool) -> str:
    """The prompt's leading text as the model sees it: for chat, every message in order with its
    role (what any chat template renders first); for completions, the prompt itself."""
    if chat:
        parts = []
        for m in body.get("messages", []):
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"<|{m.get('role')}|>{content}\n")
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else str(prompt)


def route_inputs(body: dict, request, chat: bool, model: str, prefix_chars: int,
                 kv: KVFollower | None) -> tuple[int, Mapping[str, int] | None]:
    """(prefix key, cached tokens per replica or None) for the parsed `request` of `body`."""
    key = hash64(prefix_text(body, chat)[:prefix_chars])
    return key, None if kv is None else kv.cached(model, request, chat)
