"""Chat templates: render a conversation to the prompt text the model was trained on (Jinja2).

Templates come from the model (GGUF `tokenizer.chat_template` or `tokenizer_config.json`) and run
in Jinja2's sandbox, with the helpers Hugging Face templates expect.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The conversation cannot be rendered (bad messages, or the template raised)."""


def _raise(message: str):
    raise ChatTemplateError(message)


@lru_cache(maxsize=16)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii)
    return env.from_string(source)


def render_chat(
    template: str | None,
    messages: list[dict],
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra,
) -> str:
    if not template:
        raise ChatTemplateError("this model has no chat template; use the completions API")
    if not messages:
        raise ChatTemplateError("messages must hold at least one message")
    try:
        return _compile(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    except ChatTemplateError:
        raise
    except (TemplateError, TypeError, KeyError, ValueError) as e:
        raise ChatTemplateError(f"chat template failed: {e}") from e
