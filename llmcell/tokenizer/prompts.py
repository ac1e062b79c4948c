"""The token ids a request's prompt becomes: one function for chat messages and one for a
completion prompt, used by the model server to run a request and by the gateway to find which
replica caches its prefix (they must agree token for token)."""

from __future__ import annotations

from llmcell.tokenizer.chat_template import render_chat
from llmcell.tokenizer.tokenizer import Tokenizer
from llmcell.tokenizer.tool_prompt import prepare


def chat_prompt_ids(tk: Tokenizer, messages: list[dict], add_generation_prompt: bool,
                    tools: list[dict] | None = None) -> list[int]:
    """Render `messages` (and the `tools` offered, OpenAI's shape) with the model's template and
    encode them (the template writes the BOS token itself where the model wants one). Raises
    ChatTemplateError for messages it refuses."""
    messages, extra = prepare(tk.chat_template, messages, tools)
    text = render_chat(tk.chat_template, messages, add_generation_prompt, tk.bos_token,
                       tk.eos_token, **extra)
    return tk.encode(text, add_special_tokens=False)


def completion_prompt_ids(tk: Tokenizer, prompt: str | list[int]) -> list[int]:
    return tk.encode(prompt) if isinstance(prompt, str) else list(prompt)
