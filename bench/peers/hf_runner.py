"""Hugging Face transformers peer: static batches of 32 with left padding, greedy.

Every request in a batch decodes until the batch's longest output; only the tokens each request
asked for are counted. With a time budget, batches stop being started once it is spent and the
figure covers the batches that ran (reported as partial).
"""

from __future__ import annotations

import time

import torch


def run(model, workload, dtype: torch.dtype, pad_id: int, budget_s: float,
        batch_size: int = 32) -> dict:
    model = model.to(dtype)
    prompts, outs = workload.prompts, workload.max_tokens
    done_tokens = 0
    done_requests = 0
    start = time.perf_counter()
    for b in range(0, len(prompts), batch_size):
        if b and time.perf_counter() - start > budget_s:
            break
        batch = prompts[b : b + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        new = max(outs[b : b + batch_size])
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, pad_token_id=pad_id,
                           eos_token_id=None)
        done_tokens += sum(outs[b : b + batch_size])
        done_requests += len(batch)
    wall = time.perf_counter() - start
    return {"tokens_per_s": done_tokens / wall, "wall_s": wall, "requests": done_requests,
            "partial": done_requests < len(prompts)}
