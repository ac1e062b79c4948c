"""llama.cpp as a benchmark peer: `llama-batched-bench` on the GGUF file itself (its own Q4_1
tensors), built by bench/peers/build_llama_cpp.sh.

It runs the `single` and `uniform` workloads' shapes (prompt length, new tokens, streams) with its
own prompts of those lengths; `mixed` has no equivalent there. Figures: output tokens over the
whole time (prefill included, as llmcell's), and its decode-only rate beside them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = ROOT / ".venv-peers" / "llama.cpp" / "build" / "bin"


def _has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def parse(output: str) -> list[dict]:
    """The rows of llama-batched-bench's table: PP, TG, B, N_KV, T_PP s, S_PP t/s, T_TG s,
    S_TG t/s, T s, S t/s."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            pp, tg, b = int(cells[0]), int(cells[1]), int(cells[2])
            rows.append({"pp": pp, "tg": tg, "streams": b, "total_s": float(cells[8]),
                         "decode_tokens_per_s": float(cells[7]),
                         "tokens_per_s": b * tg / float(cells[8])})
    return rows


def run(gguf: Path, workloads, threads: int) -> dict:
    exe = BIN / "llama-batched-bench"
    if not exe.exists():
        return {"unavailable": f"{exe} not found (run `make peers` or "
                               "bench/peers/build_llama_cpp.sh)"}
    results: dict = {}
    for w in workloads:
        if w.name not in ("single", "uniform"):
            continue
        pp, tg, n = len(w.prompts[0]), w.max_tokens[0], len(w.prompts)
        cmd = [str(exe), "-m", str(gguf), "-t", str(threads), "-tb", str(threads), "-c", "16384",
               "-b", "2048", "-ub", "512", "-npp", str(pp), "-ntg", str(tg), "-npl", str(n)]
        if _has_amx():  # ggml's AMX repacking crashed (ldtilecfg) on an AMX machine
            cmd.append("-nr")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        rows = parse(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not rows:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            results[w.name] = None
            results.setdefault("errors", []).append(f"{w.name}: exit {proc.returncode}: "
                                                    f"{' | '.join(tail)}")
            continue
        results[w.name] = rows[-1]
    if not any(isinstance(v, dict) for v in results.values()):
        return {"unavailable": "; ".join(results.get("errors", ["no workload ran"]))}
    return {k: v for k, v in results.items() if v is not None and k != "errors"}
