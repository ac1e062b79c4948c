"""The engine's share of a shared node: throughput alone and beside a busy co-tenant, in one run.

A co-tenant is a process that keeps one core busy (as another pod on the node would). For each
setting of the engine's OpenMP threads, the offline engine decodes `single` (one stream) and
`uniform` (N streams) alone and then with the co-tenant running, and the report prints the share
it keeps (with / alone), the median of `--rounds` alternated rounds. The settings differ only in what libgomp reads before torch loads, so
each runs in a fresh process:
  spin-3000  the engine's default (`omp_spin_count=3000`)
  gomp       libgomp's own default (spins ~300,000 rounds at every barrier)
  passive    OMP_WAIT_POLICY=PASSIVE (sleeps at once)
  llama.cpp  the peer: llama-batched-bench on the GGUF file, the same shapes (when built by
             `make peers`); its ratio to llmcell's default is printed at the end

    .venv/bin/python bench/co_tenant.py [--tokens 64] [--streams 16] [--json out.json] [--plot p.png]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmcell.engine.cpu_share import usable_cpus  # noqa: E402 (no torch)
SETTINGS = {"spin-3000": {"GOMP_SPINCOUNT": "3000"}, "gomp": {},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "llama.cpp": {}}
CHILD = r"""
import json, sys, time
from llmcell.engine import LLM, SamplingParams
tokens, streams, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
llm = LLM(kv_cache_memory=128 << 20, dtype=dtype)
llm.generate(["warm up"], SamplingParams(max_tokens=4))
p = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
out = {}
for name, n in (("single", 1), ("uniform", streams)):
    t = time.perf_counter()
    llm.generate([f"Once upon a time, story {i}:" for i in range(n)], p)
    out[name] = tokens * n / (time.perf_counter() - t)
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _llama_cpp(args) -> dict:
    from bench.peers import llama_cpp
    from llmcell.engine.loader import resolve_model_path

    exe = llama_cpp.BIN / "llama-batched-bench"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} (run `make peers`)")
    cmd = [str(exe), "-m", str(resolve_model_path("smollm2-135m-instruct")), "-t",
           str(args.threads), "-tb", str(args.threads), "-c", "8192", "-b", "2048", "-ub", "512",
           "-npp", "10", "-ntg", str(args.tokens), "-npl", f"1,{args.streams}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
    rows = {r["streams"]: r["tokens_per_s"] for r in llama_cpp.parse(proc.stdout + proc.stderr)}
    return {"single": rows[1], "uniform": rows[args.streams]}


def measure(setting: str, args, co_tenant: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(SETTINGS[setting])
    spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if co_tenant
               else None)
    try:
        if setting == "llama.cpp":
            figures = _llama_cpp(args)
        else:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.tokens),
                                  str(args.streams), args.dtype], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=900, check=True).stdout
            figures = json.loads(out.strip().splitlines()[-1])
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    log(f"{setting} {'with' if co_tenant else 'without'} co-tenant: "
        + ", ".join(f"{k} {v:.1f} tok/s" for k, v in figures.items()))
    return figures


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["settings"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, workload in zip(axes, ("single", "uniform")):
        alone = [report["settings"][n]["alone"][workload] for n in names]
        shared = [report["settings"][n]["co_tenant"][workload] for n in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], alone, 0.4, label="alone")
        ax.bar([x + 0.2 for x in xs], shared, 0.4, label="beside a busy core")
        ax.set_xticks(list(xs), names)
        ax.set_title(f"{workload} (tok/s)")
        ax.legend(fontsize=8)
    fig.suptitle(f"engine throughput on a shared node ({report['machine']['cpu_capability']}, "
                 f"{report['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per stream")
    ap.add_argument("--streams", type=int, default=16, help="streams in the uniform workload")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=usable_cpus(),
                    help="llama.cpp's threads (llmcell sizes its own to the usable CPUs)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma list of settings")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of every setting, alternated; the median is reported")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="write a PNG of the figures")
    args = ap.parse_args()
    import torch

    report = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "settings": {}}
    print(f"CPU capability {report['machine']['cpu_capability']}, {os.cpu_count()} cores")
    print(f"{'setting':<10} {'workload':<8} {'alone':>8} {'co-tenant':>10} {'kept':>6}")
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    runs: dict[str, list[tuple[dict, dict]]] = {n: [] for n in names}
    for _ in range(args.rounds):  # settings alternate, so drift of the machine hits each alike
        for name in names:
            runs[name].append((measure(name, args, False), measure(name, args, True)))
    for name in names:
        alone = {w: statistics.median(a[w] for a, _ in runs[name]) for w in runs[name][0][0]}
        shared = {w: statistics.median(c[w] for _, c in runs[name]) for w in alone}
        kept = {w: shared[w] / alone[w] for w in alone}
        report["settings"][name] = {"alone": alone, "co_tenant": shared, "kept": kept}
        for w in alone:
            print(f"{name:<10} {w:<8} {alone[w]:>8.1f} {shared[w]:>10.1f} {kept[w]:>6.0%}")
    peer, ours = report["settings"].get("llama.cpp"), report["settings"].get("spin-3000")
    if peer and ours:
        ratio = {w: ours["co_tenant"][w] / peer["co_tenant"][w] for w in peer["co_tenant"]}
        report["vs_llama_cpp_with_co_tenant"] = ratio
        print("beside the co-tenant, llmcell (default) / llama.cpp: "
              + ", ".join(f"{w} {r:.2f}x" for w, r in ratio.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
