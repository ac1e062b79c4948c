"""The built-in inference engine: continuous batching over a paged KV cache, in PyTorch."""

from llmcell.engine.async_engine import AsyncEngine, EngineDeadError
from llmcell.engine.core import EngineCore
from llmcell.engine.llm import LLM
from llmcell.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from llmcell.engine.params import SamplingParams
from llmcell.engine.process import ProcessEngine

__all__ = ["AsyncEngine", "EngineCore", "EngineDeadError", "LLM", "ProcessEngine",
           "SamplingParams", "RequestOutput", "CompletionOutput", "TokenLogprob"]
