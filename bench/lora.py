"""Multi-LoRA's cost: tokens/s of 32 concurrent streams spread over 4 LoRA adapters against the
same 32 streams of the base model alone, on one engine, in the same run.

The adapters are PEFT-format directories written here with random weights (rank `--rank` on all
seven projections, as a fine-tune for a task would be), so the bench needs nothing downloaded.
Both arms generate exactly `--tokens` tokens per stream (`ignore_eos`) from the same prompts; the
arms alternate `--rounds` times and the medians are compared. Prints the CPU capability and the
ratio; draws a bar chart (PNG).

    .venv/bin/python bench/lora.py [--streams 32] [--adapters 4] [--rank 16] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cell import median_bars  # noqa: E402
from llmcell.engine import LLM, SamplingParams  # noqa: E402
from llmcell.engine.lora.peft_dir import MODULES, module_shapes  # noqa: E402
from llmcell.protocol.lora import AdapterRef  # noqa: E402

MODEL = "smollm2-135m-instruct"


def write_adapter(path: Path, config, rank: int, seed: int) -> Path:
    """A PEFT LoRA directory with random weights on every projection of every layer."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_layers):
        for module, (out_f, in_f) in module_shapes(config).items():
            kind = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            name = f"base_model.model.model.layers.{layer}.{kind}.{module}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) / in_f ** 0.5
            tensors[f"{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.01
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(MODULES),
        "bias": "none", "base_model_name_or_path": MODEL}))
    return path


def run_arm(llm: LLM, prompts: list[str], tokens: int, loras) -> tuple[float, int]:
    params = SamplingParams(max_tokens=tokens, temperature=0.8, ignore_eos=True, seed=0)
    started = time.monotonic()
    outs = llm.generate(prompts, params, lora_request=loras)
    seconds = time.monotonic() - started
    total = sum(len(o.outputs[0].token_ids) for o in outs)
    return total / seconds, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/lora.json")
    p.add_argument("--plot", type=Path, default=ROOT / "bench/results/lora.png")
    args = p.parse_args()
    capability = torch.backends.cpu.get_cpu_capability()
    llm = LLM(MODEL, max_num_seqs=args.streams, max_loras=args.adapters,
              kv_cache_memory=512 << 20, threads=args.threads)
    prompts = [f"Tell me a short story about the number {i}." for i in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp:
        refs = [AdapterRef(f"adapter-{a}", str(write_adapter(Path(tmp) / f"a{a}",
                                                               llm.core.model.config, args.rank, a)))
                for a in range(args.adapters)]
        arms = {"base": None, f"{args.adapters} adapters": [refs[i % len(refs)]
                                                            for i in range(args.streams)]}
        run_arm(llm, prompts[:4], 8, None)  # warm-up
        run_arm(llm, prompts[:len(refs)], 8, refs)  # loads the adapters
        rates: dict[str, list[float]] = {name: [] for name in arms}
        for r in range(args.rounds):
            for name, loras in arms.items():
                rate, total = run_arm(llm, prompts, args.tokens, loras)
                rates[name].append(rate)
                print(f"round {r + 1} {name}: {rate:.1f} tok/s ({total} tokens)", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    names = list(median)
    ratio = median[names[1]] / median[names[0]]
    result = {"cpu_capability": capability, "dtype": str(llm.core.dtype), "streams": args.streams,
              "adapters": args.adapters, "rank": args.rank, "tokens": args.tokens,
              "rounds": rates, "median_tok_s": median, "adapters_over_base": ratio}
    print(json.dumps(result, indent=2))
    print(f"CPU capability {capability}: {names[1]} / base = {ratio:.2f} (target >= 0.70)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("plot:", median_bars(median, f"{args.streams} streams x {args.tokens} tokens, rank "
                                       f"{args.rank}, {capability}: {ratio:.2f}x", args.plot))


if __name__ == "__main__":
    main()
