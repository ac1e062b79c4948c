"""Token sampling: penalties, temperature, top-k/top-p/min-p, seeded draws, logprobs, and guided
decoding's grammars and masks.

The names load on first use (PEP 562): the model server compiles grammars (`grammar.py`, no
torch) without importing the sampler's torch code.
"""

from importlib import import_module

_EXPORTS = {"Sampler": "llmcell.engine.sampling.sampler",
            "SamplingRow": "llmcell.engine.sampling.sampler"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmcell.engine.sampling' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
