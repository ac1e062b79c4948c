"""Engine throughput: llmcell's engine against peers on the same workloads, in one run.

Workloads (see bench/workloads.py): `single` (one stream, 128-token prompt), `uniform` (32
concurrent 128-token chat prompts), `mixed` (256 requests, prompts 32-1,024 and outputs 16-256
tokens, all at once). Peers: Hugging Face transformers `generate` with static batches of 32 and
left padding, in bf16 (always) and fp32; vLLM CPU from .venv-peers when present (a subprocess);
llama.cpp's llama-batched-bench on the GGUF file when built (`make peers`; single and uniform).
All engines decode greedily and produce exactly the requested number of tokens.

    .venv/bin/python bench/engine_throughput.py --json /tmp/engine.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmcell.config.engine import EngineConfig  # noqa: E402 (no torch)
from llmcell.engine.cpu_share import set_openmp_spin, usable_cpus  # noqa: E402 (no torch)

set_openmp_spin(EngineConfig.omp_spin_count)  # as `llmcell server` runs: before torch loads
import torch  # noqa: E402

from bench import workloads as wl  # noqa: E402
from bench.peers import hf_runner, llama_cpp  # noqa: E402
from llmcell.engine import LLM, SamplingParams  # noqa: E402
from llmcell.engine.loader import load_checkpoint  # noqa: E402
from llmcell.tokenizer.chat_template import render_chat  # noqa: E402
from llmcell.engine.loader.export import export_hf_dir  # noqa: E402

VLLM_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


def cpu_flags() -> set[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines()
                    if x.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_llmcell(checkpoint, workloads, args, label="llmcell", dtype=None,
                quantization=None) -> dict:
    llm = LLM(config=EngineConfig(model=args.model, dtype=dtype or args.dtype,
                                  threads=args.threads, quantization=quantization,
                                  kv_cache_memory=args.kv_cache_gib << 30),
              checkpoint=checkpoint)
    llm.generate([[1, 2, 3, 4]] * 4, SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    results = {"dtype": str(llm.core.dtype).removeprefix("torch.")}
    for w in workloads:
        params = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True)
                  for m in w.max_tokens]
        llm.core.block_manager.reset_prefix_cache()  # no free hits from an earlier workload
        t = time.perf_counter()
        outs = llm.generate(w.prompts, params)
        wall = time.perf_counter() - t
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        assert tokens == w.total_output_tokens, (tokens, w.total_output_tokens)
        results[w.name] = {"tokens_per_s": tokens / wall, "wall_s": wall}
        log(f"{label} {w.name}: {tokens / wall:.1f} tok/s ({wall:.1f}s)")
    return results


def run_hf(checkpoint, workloads, dtype, budget_s: float) -> dict:
    from transformers import LlamaForCausalLM

    from llmcell.engine.loader.export import hf_state_dict

    with tempfile.TemporaryDirectory() as d:
        export_hf_dir(checkpoint, d, torch.float32)
        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    del hf_state_dict
    pad = min(checkpoint.tokenizer.eos_token_ids)
    results = {}
    for w in workloads:
        r = hf_runner.run(model, w, dtype, pad, budget_s)
        results[w.name] = r
        log(f"hf-{str(dtype)[6:]} {w.name}: {r['tokens_per_s']:.1f} tok/s"
            f"{' (partial: %d requests)' % r['requests'] if r['partial'] else ''}")
    return results


def run_vllm(checkpoint, workloads, threads: int, mixed_cap: int) -> dict:
    if not VLLM_PYTHON.exists():
        return {"unavailable": ".venv-peers not found (run `make peers`)"}
    capped = []
    for w in workloads:
        j = w.to_json()
        if w.name == "mixed" and mixed_cap and len(w.prompts) > mixed_cap:
            j["prompts"], j["max_tokens"] = j["prompts"][:mixed_cap], j["max_tokens"][:mixed_cap]
            j["partial"] = True
        capped.append(j)
    with tempfile.TemporaryDirectory() as d:
        model_dir = export_hf_dir(checkpoint, Path(d) / "model", torch.bfloat16)
        wpath, rpath = Path(d) / "workloads.json", Path(d) / "result.json"
        wpath.write_text(json.dumps(capped))
        env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}",
                   VLLM_CPU_NUM_OF_RESERVED_CPU="0", VLLM_CPU_KVCACHE_SPACE="4")
        log("vLLM: starting (its warm-up compiles for about a minute)")
        proc = subprocess.run([str(VLLM_PYTHON), str(ROOT / "bench/peers/vllm_runner.py"),
                               str(model_dir), str(wpath), str(rpath)], env=env, cwd=d,
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0 or not rpath.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"unavailable": f"vLLM exited {proc.returncode}: {' | '.join(tail)}"}
        results = json.loads(rpath.read_text())
    for j in capped:
        if j.get("partial"):
            results[j["name"]].update(partial=True, requests=len(j["prompts"]))
    for w in workloads:
        log(f"vllm {w.name}: {results[w.name]['tokens_per_s']:.1f} tok/s")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (< 3 minutes)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="auto", help="llmcell's dtype (auto: bf16 only where native)")
    ap.add_argument("--threads", type=int, default=usable_cpus())
    ap.add_argument("--kv-cache-gib", type=int, default=4)
    ap.add_argument("--peers", default=None,
                    help="comma list of hf-bf16, hf-fp32, vllm, llama.cpp (default: all; with "
                         "--quick hf-bf16,hf-fp32,llama.cpp, since vLLM's start-up alone takes "
                         "minutes)")
    ap.add_argument("--vllm-mixed-requests", type=int, default=64,
                    help="vLLM runs the first N mixed requests (its bf16 kernels are emulated "
                         "on CPUs without AVX512-BF16); 0 = all (default: %(default)s)")
    ap.add_argument("--int8-workloads", default="single",
                    help="workloads also run with int8 weights + bf16 activations "
                         "(default: %(default)s; empty to skip)")
    ap.add_argument("--int8-dense-workloads", default="single,uniform",
                    help="workloads also run with int8 weights + a bf16 copy for steps of 8+ rows "
                         "(default: %(default)s; empty to skip)")
    ap.add_argument("--peer-budget", type=float, default=None,
                    help="seconds per HF workload before it stops starting new batches "
                         "(default 60, 20 with --quick)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budget = args.peer_budget or (20.0 if args.quick else 60.0)

    checkpoint = load_checkpoint(args.model)
    tk = checkpoint.tokenizer

    def render(text: str) -> str:
        return render_chat(tk.chat_template, [{"role": "user", "content": text}], True)

    workloads = wl.build(tk, render, args.quick)
    engines: dict[str, dict] = {}
    engines["llmcell"] = run_llmcell(checkpoint, workloads, args)
    int8 = [w for w in workloads if w.name in args.int8_workloads.split(",")]
    if int8:
        engines["llmcell-int8"] = run_llmcell(checkpoint, int8, args, "llmcell-int8",
                                              "bfloat16", "int8")
    dense = [w for w in workloads if w.name in args.int8_dense_workloads.split(",")]
    if dense:
        engines["llmcell-int8-dense"] = run_llmcell(checkpoint, dense, args, "llmcell-int8-dense",
                                                    "bfloat16", "int8_dense")
    peer_list = args.peers or ("hf-bf16,hf-fp32,llama.cpp" if args.quick
                               else "hf-bf16,hf-fp32,vllm,llama.cpp")
    peers = [p.strip() for p in peer_list.split(",") if p.strip()]
    if "llama.cpp" in peers:
        log("llama.cpp: llama-batched-bench on the GGUF file")
        engines["llama.cpp"] = llama_cpp.run(checkpoint.source, workloads, args.threads)
    if "vllm" in peers:
        engines["vllm"] = run_vllm(checkpoint, workloads, args.threads, args.vllm_mixed_requests)
    for name, dtype in (("hf-bf16", torch.bfloat16), ("hf-fp32", torch.float32)):
        if name in peers:
            engines[name] = run_hf(checkpoint, workloads, dtype, budget)

    report = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "quick": args.quick, "engines": {}, "workloads": {}}
    for name, res in engines.items():
        report["engines"][name] = {k: v for k, v in res.items() if not isinstance(v, dict)}
    header = f"{'workload':<9} {'requests':>9} " + " ".join(f"{n:>12}" for n in engines)
    lines = [header + f" {'vs best peer':>13}", "-" * (len(header) + 14)]
    for w in workloads:
        row = {"requests": len(w.prompts), "output_tokens": w.total_output_tokens}
        cells = []
        for name, res in engines.items():
            fig = res.get(w.name)
            row[name] = fig or {"unavailable": res.get("unavailable", "not run")}
            cells.append(f"{fig['tokens_per_s']:>11.1f}{'*' if fig.get('partial') else ' '}"
                         if fig else f"{'n/a':>12}")
        peer_figs = {n: r[w.name]["tokens_per_s"] for n, r in engines.items()
                     if not n.startswith("llmcell") and w.name in r}
        ours = engines["llmcell"][w.name]["tokens_per_s"]
        if peer_figs:
            best = max(peer_figs, key=peer_figs.get)
            row["best_peer"] = best
            row["ratio_vs_best_peer"] = ours / peer_figs[best]
            for n, v in peer_figs.items():
                row[f"ratio_vs_{n}"] = ours / v
            if "llmcell-int8" in engines and w.name in engines["llmcell-int8"]:
                row["int8_ratio_vs_best_peer"] = (engines["llmcell-int8"][w.name]["tokens_per_s"]
                                                  / peer_figs[best])
        ratio = row.get("ratio_vs_best_peer")
        lines.append(f"{w.name:<9} {len(w.prompts):>9} " + " ".join(cells)
                     + (f" {ratio:>12.2f}x" if ratio else f" {'n/a':>13}"))
        report["workloads"][w.name] = row
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    report["machine"]["cpu_flags"] = flags
    print(f"CPU capability {report['machine']['cpu_capability']}, flags {' '.join(flags)}, "
          f"{args.threads} threads, llmcell dtype {engines['llmcell']['dtype']}")
    print("tokens/s (output tokens / wall time; * = measured on part of the workload: HF on the "
          "batches that fit its time budget, vLLM on the first mixed requests)")
    print("\n".join(lines))
    for name, res in engines.items():
        if "unavailable" in res:
            print(f"{name}: unavailable: {res['unavailable']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
