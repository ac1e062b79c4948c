"""Token sampling: penalties, temperature, top-k/top-p/min-p, seeded draws, logprobs."""

from llmcell.engine.sampling.sampler import Sampler, SamplingRow

__all__ = ["Sampler", "SamplingRow"]
