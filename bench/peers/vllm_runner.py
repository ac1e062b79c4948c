"""vLLM CPU peer, run inside .venv-peers as a subprocess: reads workloads, prints JSON results.

Usage: python vllm_runner.py MODEL_DIR WORKLOADS.json RESULT.json
"""

import json
import sys
import time


def main() -> None:
    model_dir, workloads_path, result_path = sys.argv[1:4]
    from vllm import LLM, SamplingParams

    workloads = json.load(open(workloads_path))
    longest = max(len(p) + m for w in workloads for p, m in zip(w["prompts"], w["max_tokens"]))
    started = time.perf_counter()
    llm = LLM(model=model_dir, dtype="bfloat16", max_model_len=max(2048, longest),
              enable_prefix_caching=False)
    results = {"load_s": time.perf_counter() - started}
    llm.generate([{"prompt_token_ids": [1, 2, 3]}], SamplingParams(max_tokens=4))  # warm-up
    for w in workloads:
        prompts = [{"prompt_token_ids": p} for p in w["prompts"]]
        params = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True)
                  for m in w["max_tokens"]]
        t = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        results[w["name"]] = {"tokens_per_s": tokens / wall, "wall_s": wall}
    json.dump(results, open(result_path, "w"))


if __name__ == "__main__":
    main()
