"""Command line: `llmcell <verb>`. Parses flags into config dataclasses and hands them down.

Verbs: `generate` (stream a completion), `chat` (multi-turn chat through the model's template),
`server` (one model server), `admin` (control plane), `gateway` (front door on 8888), `up` (the
whole cell locally), `plan` and `render` (Kubernetes sizing and manifests, in `deploy/cli.py`), `bench` (load test
with a report, in `bench/cli.py`), `batch` (a file of requests as a batch, in `batch/cli.py`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterator

from llmcell.config.engine import EngineConfig
from llmcell.config.server import ServerConfig
from llmcell.engine.cpu_share import set_openmp_spin
from llmcell.batch.cli import add_batch_parser
from llmcell.engine.loader.tokenizer_cli import add_tokenizer_parser
from llmcell.bench.cli import add_bench_parser
from llmcell.cell_cli import add_cell_parsers, add_security_flags, parse_size, security
from llmcell.config.server import lora_module
from llmcell.deploy.cli import add_deploy_parsers
from llmcell.epp.cli import add_epp_parser


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", default="smollm2-135m-instruct",
                   help="built-in alias, GGUF file or Hugging Face directory (default: %(default)s)")
    g.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="weights/activations dtype; auto = bf16 where the hardware has it, else fp32")
    g.add_argument("--quantization", default=None, choices=["int8", "int8_dense"],
                   help="int8 weight-only quantization (per-channel scales); int8_dense also "
                        "keeps a dense copy for steps of 8+ rows (fast at every batch size)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads; 0 = the CPUs this process may use (affinity, capped by the "
                        "cgroup's CPU quota)")
    g.add_argument("--omp-spin-count", type=int, default=EngineConfig.omp_spin_count,
                   help="GOMP_SPINCOUNT for torch's OpenMP threads unless the environment sets "
                        "it; 0 = the runtime's default (default: %(default)s)")
    g.add_argument("--no-weight-cache", action="store_true",
                   help="dequantize a GGUF file's weights at every start instead of keeping them "
                        "in the per-machine cache (~/.cache/llmcell/weights)")
    g.add_argument("--model-key-file", default=None,
                   help="master key of an encrypted --model (`llmcell keys encrypt-model`)")
    g.add_argument("--kv-cache-memory", type=parse_size, default=EngineConfig.kv_cache_memory,
                   help="bytes for the KV cache, e.g. 2GiB (default: 2GiB)")
    g.add_argument("--max-model-len", type=int, default=0,
                   help="longest prompt + output in tokens; 0 = the model's context length")
    g.add_argument("--max-num-seqs", type=int, default=EngineConfig.max_num_seqs,
                   help="most sequences in one batch (default: %(default)s)")
    g.add_argument("--max-num-batched-tokens", type=int,
                   default=EngineConfig.max_num_batched_tokens,
                   help="token budget per step; long prompts prefill in chunks of this size")
    g.add_argument("--no-prefix-caching", action="store_true", help="disable prefix caching")
    g.add_argument("--max-loras", type=int, default=EngineConfig.max_loras,
                   help="LoRA adapters resident at once; more are loaded on demand, least "
                        "recently used evicted (default: %(default)s)")
    g.add_argument("--step-hold-ms", type=float, default=EngineConfig.step_hold_ms,
                   help="the most a step is held (and at most 2%% of a step) for requests about "
                        "to come: after a step that finished requests, for their replacements; "
                        "a lone request at an idle engine, for the rest of a burst; 0 = off "
                        "(default: %(default)s)")
    g.add_argument("--attention-backend", default="auto", choices=["auto", "native", "torch"],
                   help="decode attention: native C++ kernel over the paged cache (CPU), "
                        "torch (gather + SDPA), auto (native where it applies)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model, dtype=args.dtype, quantization=args.quantization, device=args.device,
        threads=args.threads, kv_cache_memory=args.kv_cache_memory,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=not args.no_prefix_caching, step_hold_ms=args.step_hold_ms,
        max_loras=args.max_loras,
        attention_backend=args.attention_backend, omp_spin_count=args.omp_spin_count,
        model_key_file=args.model_key_file,
        **({"weight_cache_dir": None} if args.no_weight_cache else {}),
        show_progress=sys.stderr.isatty())


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=256, help="tokens to generate at most")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_params(args: argparse.Namespace):
    from llmcell.protocol.sampling import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                          top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                          stop=tuple(args.stop))


def _stream(core, prompt_ids: list[int], params) -> Iterator[str]:
    core.add_request("cli", prompt_ids, params)
    while core.has_work():
        for out in core.step():
            yield out.outputs[0].delta_text


def cmd_generate(args: argparse.Namespace) -> int:
    from llmcell.engine.core import EngineCore

    core = EngineCore(engine_config(args))
    params = sampling_params(args)
    if args.raw:
        ids = core.tokenizer.encode(args.prompt)
    else:
        from llmcell.tokenizer.chat_template import render_chat

        text = render_chat(core.tokenizer.chat_template, [{"role": "user", "content": args.prompt}],
                           True, core.tokenizer.bos_token, core.tokenizer.eos_token)
        ids = core.tokenizer.encode(text, add_special_tokens=False)
    for delta in _stream(core, ids, params):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from llmcell.engine.core import EngineCore
    from llmcell.tokenizer.chat_template import render_chat

    core = EngineCore(engine_config(args))
    params = sampling_params(args)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"llmcell chat with {args.model} (Ctrl-D or /exit to quit, /reset to start over)")
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        text = render_chat(core.tokenizer.chat_template, messages, True,
                           core.tokenizer.bos_token, core.tokenizer.eos_token)
        ids = core.tokenizer.encode(text, add_special_tokens=False)
        if interactive:
            sys.stdout.write("assistant> ")
        reply = []
        for delta in _stream(core, ids, params):
            reply.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


def cmd_server(args: argparse.Namespace) -> int:
    import os

    from llmcell.config.server import GroupConfig, ServerConfig
    from llmcell.server.main import run

    group = GroupConfig.from_env(os.environ, size=args.group_size, rank=args.group_rank,
                                 leader=args.group_leader, port=args.group_port)
    config = ServerConfig(
        host=args.host, port=args.port, engine=args.engine, upstream=args.upstream,
        served_model_name=args.served_model_name, max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue, drain_timeout=args.drain_timeout, admin=args.admin,
        metrics=not args.no_metrics, engine_process=not args.engine_in_process,
        engine_nice=args.engine_nice,
        engine_idle=args.engine_idle,
        server_id=args.server_id, advertise=args.advertise, memory_bytes=args.memory,
        lora_modules=tuple(args.lora_modules), upstream_connections=args.upstream_connections,
        engine_config=engine_config(args), group=group, security=security(args))
    return run(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcell", description=(
        "llmcell: serve LLMs as a cell of model servers behind one gateway."))
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    g = sub.add_parser("generate", help="stream a completion for one prompt",
                       description="Stream the model's answer to PROMPT (chat-templated unless --raw).")
    g.add_argument("prompt", help="the prompt text")
    g.add_argument("--raw", action="store_true", help="complete the text as is, no chat template")
    add_engine_flags(g)
    add_sampling_flags(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="interactive multi-turn chat",
                       description="Chat with the model; each turn goes through its chat template.")
    c.add_argument("--system", default=None, help="system prompt")
    add_engine_flags(c)
    add_sampling_flags(c)
    c.set_defaults(func=cmd_chat)

    s = sub.add_parser("server", help="run one OpenAI-compatible model server",
                       description="Serve a model over the OpenAI API (chat, completions, models, "
                                   "tokenize) with /health, /ready and /metrics.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--engine", default="builtin", choices=["builtin", "openai"],
                   help="builtin: the in-process engine; openai: forward to --upstream")
    s.add_argument("--upstream", default=None,
                   help="base URL of an external OpenAI-compatible engine (vLLM, SGLang, llmcell)")
    s.add_argument("--served-model-name", default=None,
                   help="model name clients use (default: --model, or the upstream's model)")
    s.add_argument("--upstream-connections", type=int, default=0,
                   help="requests in flight to the --upstream engine at most; beyond it 429 + "
                        "Retry-After at once (default: 0, no ceiling)")
    s.add_argument("--lora-modules", nargs="+", default=[], type=lora_module,
                   metavar="NAME=PATH",
                   help="LoRA adapters (PEFT directories) served beside the model under their "
                        "own names, as vLLM's flag (standalone; in a cell, publish them)")
    s.add_argument("--max-body-bytes", type=parse_size, default=4 << 20,
                   help="largest request body accepted (default: 4MiB)")
    s.add_argument("--max-queue", type=int, default=256,
                   help="requests that may wait beyond the batch; more get 429 (default: 256)")
    s.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish running requests after SIGTERM (default: 30)")
    s.add_argument("--admin", default=None,
                   help="join the cell of this admin URL and load the models it assigns")
    s.add_argument("--group-size", type=int, default=None,
                   help="processes in this model-server group (tensor parallel); default: "
                        "$LWS_GROUP_SIZE or 1")
    s.add_argument("--group-rank", type=int, default=None,
                   help="this process's rank, 0 = leader; default: $LWS_WORKER_INDEX or 0")
    s.add_argument("--group-leader", default=None,
                   help="the leader's address; default: $LWS_LEADER_ADDRESS or 127.0.0.1")
    s.add_argument("--group-port", type=int, default=None,
                   help="rendezvous port on the leader; default: $LLMCELL_GROUP_PORT or 29500")
    s.add_argument("--no-metrics", action="store_true",
                   help="record no request metrics (/metrics is empty); to measure their cost")
    s.add_argument("--engine-in-process", action="store_true",
                   help="run the builtin engine on a thread of this process instead of a process "
                        "of its own (HTTP and the engine then share the GIL)")
    s.add_argument("--engine-nice", type=int, default=ServerConfig.engine_nice,
                   help="CPU priority of the engine process below the server's, 0-19 "
                        "(default: %(default)s: the front end wins a contested core, and the "
                        "engine still takes a fair share of a node beside other processes)")
    s.add_argument("--engine-idle", action="store_true",
                   help="run the engine process under SCHED_IDLE (Linux): it takes only CPU time "
                        "no other process wants; lowest latency on a dedicated node, starved on "
                        "a shared one")
    s.add_argument("--server-id", default=None, help="id in the cell (default: its address)")
    s.add_argument("--advertise", default=None,
                   help="URL the gateway reaches this server at (default: http://host:port)")
    s.add_argument("--memory", type=parse_size, default=8 << 30,
                   help="memory offered to the cell for replicas (default: 8GiB)")
    add_engine_flags(s)
    add_security_flags(s)
    s.set_defaults(func=cmd_server)
    add_cell_parsers(sub)
    add_epp_parser(sub, add_security_flags, security)
    add_deploy_parsers(sub)
    add_bench_parser(sub)
    add_batch_parser(sub)
    add_tokenizer_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # before anything here imports torch; the processes this one starts inherit it
    set_openmp_spin(getattr(args, "omp_spin_count", EngineConfig.omp_spin_count))
    try:
        return func(args)
    except ValueError as e:
        print(f"llmcell: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
