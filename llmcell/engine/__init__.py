"""The built-in inference engine: continuous batching over a paged KV cache, in PyTorch.

The names below load on first use (PEP 562), so that what needs only the engine's wire types
(`SamplingParams`, outputs, `ProcessEngine`'s client side: a model server whose engine runs in a
process of its own, the gateway, the admin) does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "AsyncEngine": "llmcell.engine.async_engine",
    "EngineDeadError": "llmcell.engine.async_engine",
    "EngineCore": "llmcell.engine.core",
    "LLM": "llmcell.engine.llm",
    "ProcessEngine": "llmcell.engine.process",
    "SamplingParams": "llmcell.protocol.sampling",
    "RequestOutput": "llmcell.engine.outputs",
    "CompletionOutput": "llmcell.engine.outputs",
    "TokenLogprob": "llmcell.engine.outputs",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmcell.engine' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
