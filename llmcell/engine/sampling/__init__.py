"""Token sampling (`sampler.py`: penalties, temperature, top-k/top-p/min-p, seeded draws,
logprobs) and guided decoding (`grammar.py`: grammars compiled with llguidance, no torch, which
the model server also uses; `guided.py`: the batch's masks). Nothing is imported here, so that
the model server compiles grammars without importing torch."""
