"""Engine core: owns the scheduler and the runner and turns steps into per-request outputs.

`step()` = `schedule()` -> `runner.execute(plan)` -> `update(plan, result)` -> detokenize, apply
stop strings, build outputs. Single-threaded: the async engine calls it from one thread, the
offline `LLM` from the caller's.
"""

from __future__ import annotations

import itertools
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from llmcell.config.engine import EngineConfig
from llmcell.engine.detokenizer import IncrementalDetokenizer
from llmcell.engine.cpu_share import usable_cpus
from llmcell.engine.device import resolve_dtype
from llmcell.engine.kv_cache import BlockManager
from llmcell.encryption import read_key
from llmcell.engine.loader import load_checkpoint
from llmcell.tokenizer.tokenizer import Tokenizer
from llmcell.engine.loader.weights import Checkpoint, terminal_progress
from llmcell.engine.lora.slots import AdapterSlots
from llmcell.engine.lora.weights import LoraStack, load_lora
from llmcell.engine.models import numerics
from llmcell.engine.models.attention import PagedKVCache
from llmcell.engine.models.llama import LlamaModel
from llmcell.engine.parallel.group import LeaderRunner
from llmcell.engine.parallel.tensor import TensorParallel, shard_tensor
from llmcell.engine.outputs import (CompletionOutput, RequestMetrics, RequestOutput, Resume,
                                    TokenLogprob)
from llmcell.protocol.lora import AdapterRef, cache_root
from llmcell.protocol.sampling import SamplingParams, check_request
from llmcell.engine.runner import ModelRunner
from llmcell.engine.sampling.grammar import GrammarCompiler
from llmcell.engine.scheduler import Scheduler
from llmcell.engine.sequence import Sequence
from llmcell.engine.stats import EngineStats



@dataclass
class _Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    detoks: list[IncrementalDetokenizer]
    outputs: list[CompletionOutput]
    touched: set[int] = field(default_factory=set)
    adapter: AdapterRef | None = None
    slot: int | None = None
    """Its adapter's slot once resident (pinned until the request ends)."""


class EngineCore:
    def __init__(self, config: EngineConfig, checkpoint: Checkpoint | None = None,
                 tp: TensorParallel | None = None) -> None:
        self.config = config
        torch.set_num_threads(config.threads or usable_cpus())
        device = torch.device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        started = time.monotonic()
        presharded = False
        if checkpoint is None:
            progress = terminal_progress(f"loading {config.model}") if config.show_progress else None
            keep = None
            if tp is not None and tp.size > 1:  # read only this rank's slice of each tensor
                presharded = True
                keep = partial(shard_tensor, rank=tp.rank, size=tp.size)
            cache = Path(config.weight_cache_dir) if config.weight_cache_dir else None
            key = read_key(config.model_key_file) if config.model_key_file else None
            checkpoint = load_checkpoint(config.model, progress, keep, cache, key)
        self.model_config = checkpoint.config
        self.tokenizer: Tokenizer = checkpoint.tokenizer
        self.model = self._checked_model(config, checkpoint, dtype, device, tp, presharded)
        dtype = self.model.dtype
        mc = self.model.config  # this rank's share of the heads under tensor parallelism
        per_block = mc.kv_bytes_per_token(torch.finfo(dtype).bits // 8) * config.block_size
        num_blocks = config.kv_cache_memory // per_block
        if num_blocks < 2:
            raise ValueError(f"kv_cache_memory={config.kv_cache_memory} holds {num_blocks} blocks "
                             f"of {per_block} bytes; give it at least {2 * per_block}")
        self.cache = PagedKVCache(mc.num_layers, num_blocks, config.block_size, mc.num_kv_heads,
                                  mc.head_dim, dtype, device)
        max_len = config.max_model_len or mc.max_position_embeddings
        self.max_model_len = min(max_len, mc.max_position_embeddings, num_blocks * config.block_size)
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs,
                                   config.max_num_batched_tokens, self.max_model_len)
        leads_group = tp is not None and tp.size > 1 and tp.rank == 0
        runner = LeaderRunner if leads_group else ModelRunner
        self.runner = runner(self.model, self.cache, config.seed,
                             self._kernels(config, device))
        self.dtype = dtype
        self.device = device
        self.load_seconds = time.monotonic() - started
        self._requests: dict[str, _Request] = {}
        self.grammars = GrammarCompiler(self.tokenizer, self.model.full_vocab)
        self._compiling: dict[str, Future] = {}
        """Guided requests whose grammar compiles (off the step): scheduled once it has."""
        self.adapters = AdapterSlots(
            LoraStack(self.model.config, config.max_loras, config.max_lora_rank, dtype, device),
            partial(load_lora, config=self.model.config, max_rank=config.max_lora_rank))
        self.runner.lora = self.adapters.stack
        self._adapter_wait: dict[str, _Request] = {}
        """Requests whose LoRA adapter is not resident yet, in arrival order."""
        self._tp_size = 1 if tp is None else tp.size
        self._refused: list[tuple[str, str]] = []
        self._seq_ids = itertools.count()
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._steps = 0
        self._prefill_seconds = 0.0

    @staticmethod
    def _checked_model(config: EngineConfig, checkpoint: Checkpoint, dtype: torch.dtype,
                       device: torch.device, tp: TensorParallel | None,
                       presharded: bool) -> LlamaModel:
        """The model, once this machine's kernels for its dtype are known to compute right
        (`models/numerics.py`). A broken bf16/fp16 path on CPU is retried with oneDNN off (torch's
        own kernels; a process-wide switch, and the engine owns its process); if it is still
        wrong, dtype=auto falls back to fp32 and an explicit dtype refuses to start."""
        def build(dt: torch.dtype) -> LlamaModel:
            return LlamaModel(checkpoint.config, checkpoint.weights, dt, device,
                              config.quantization, tp, presharded)

        model = build(dtype)
        problem = numerics.check_model(model)
        if problem is None:
            return model
        name = str(dtype).removeprefix("torch.")
        if device.type == "cpu" and torch.backends.mkldnn.enabled:
            torch.backends.mkldnn.enabled = False
            retried = numerics.check_model(model)
            if retried is None:
                print(f"llmcell engine: {name} through oneDNN is wrong here ({problem}); "
                      f"oneDNN is off for this process", file=sys.stderr)
                return model
            torch.backends.mkldnn.enabled = True
            problem = retried
        if config.dtype != "auto":
            raise RuntimeError(f"dtype={config.dtype!r} computes wrong results on this machine: "
                               f"{problem}; use dtype='float32'")
        print(f"llmcell engine: {name} computes wrong results here ({problem}); dtype=auto "
              f"falls back to float32", file=sys.stderr)
        return build(torch.float32)

    @staticmethod
    def _kernels(config: EngineConfig, device: torch.device):
        """The native paged-attention kernels, or None for the PyTorch path."""
        if config.attention_backend == "torch":
            return None
        if device.type != "cpu":
            if config.attention_backend == "native":
                raise ValueError("attention_backend='native' needs device='cpu'")
            return None
        from llmcell.engine.kernels.build import paged_attention_kernels

        kernels = paged_attention_kernels()
        if kernels is None and config.attention_backend == "native":
            raise ValueError("attention_backend='native': the kernel could not be built here")
        return kernels

    # ---- requests ----------------------------------------------------------------------------------
    def check_request(self, prompt_token_ids: list[int],
                      params: SamplingParams) -> SamplingParams:
        """`params` with `max_tokens` resolved, or ValueError if the request can never run here
        (checked before it is queued)."""
        return check_request(prompt_token_ids, params, self.model_config.vocab_size,
                             self.max_model_len)

    def add_request(self, request_id: str, prompt_token_ids: list[int],
                    params: SamplingParams, arrival: float | None = None,
                    resume: Resume | None = None, adapter: AdapterRef | None = None) -> None:
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already running")
        if adapter is not None and self._tp_size > 1:
            raise ValueError("LoRA adapters are not served by a tensor-parallel group yet")
        params = self.check_request(prompt_token_ids, params)
        if resume is not None and (params.n != 1 or len(resume.token_ids) >= params.max_tokens):
            raise ValueError(f"a continuation needs n=1 and fewer than max_tokens="
                             f"{params.max_tokens} tokens already generated (got n={params.n}, "
                             f"{len(resume.token_ids)} tokens)")
        seqs, detoks, outs = [], [], []
        for i in range(params.n):
            p = params.for_sibling(i) if params.n > 1 else params
            seq = Sequence(next(self._seq_ids), request_id, i, list(prompt_token_ids), p,
                           eos_token_ids=self.tokenizer.eos_token_ids)
            if arrival is not None:
                seq.times.arrival = arrival
            if adapter is not None:
                seq.cache_root = cache_root(adapter.name)
            detok = IncrementalDetokenizer(self.tokenizer, p.stop, p.skip_special_tokens,
                                           p.include_stop_str_in_output)
            out = CompletionOutput(i, logprobs=[] if p.logprobs is not None else None)
            if resume is not None:  # what the client has: prefilled with the prompt, not sent
                seq.output_token_ids = list(resume.token_ids)
                out.token_ids = list(resume.token_ids)
                out.text = detok.resume(resume.token_ids, resume.emitted_chars)
            seqs.append(seq)
            detoks.append(detok)
            outs.append(out)
        req = _Request(request_id, list(prompt_token_ids), params, seqs, detoks, outs,
                       adapter=adapter)
        self._requests[request_id] = req
        if params.guided is not None:
            self._compiling[request_id] = self.grammars.submit(params.guided)
            return
        self._queue(req)

    def _queue(self, req: _Request) -> None:
        """To the scheduler, or to wait for its adapter to be resident."""
        if req.adapter is not None:
            self._adapter_wait[req.request_id] = req
            return
        for seq in req.seqs:
            self.scheduler.add(seq)

    def _admit_adapted(self) -> None:
        """Schedule the requests whose adapters are resident (starting loads for the others as
        slots allow); refuse those whose adapter failed to load."""
        for ref, reason in self.adapters.failures():
            for rid, req in list(self._adapter_wait.items()):
                if req.adapter == ref:
                    del self._adapter_wait[rid], self._requests[rid]
                    self._refused.append((rid, f"LoRA adapter {ref.name}: {reason}"))
        for rid, req in list(self._adapter_wait.items()):
            slot = self.adapters.acquire(req.adapter)
            if slot is None:
                continue
            del self._adapter_wait[rid]
            req.slot = slot
            for seq in req.seqs:
                seq.adapter = slot
                self.scheduler.add(seq)
        if self._adapter_wait and not self.scheduler.has_work():
            self.adapters.wait(0.01)

    def _admit_compiled(self) -> None:
        """Schedule the guided requests whose grammars have compiled (waiting briefly for one
        when nothing else runs); a grammar that fails refuses its request (`take_refused`)."""
        if not self.scheduler.has_work():
            wait(list(self._compiling.values()), timeout=0.01, return_when=FIRST_COMPLETED)
        for rid, future in list(self._compiling.items()):
            if not future.done():
                continue
            del self._compiling[rid]
            req = self._requests[rid]
            try:
                grammar = future.result()
            except ValueError as e:
                del self._requests[rid]
                self._refused.append((rid, str(e)))
                continue
            for seq in req.seqs:
                seq.grammar = grammar
            self._queue(req)

    def take_refused(self) -> list[tuple[str, str]]:
        """(request id, reason) of requests refused after they were added (their grammar did
        not compile); each is reported once."""
        refused, self._refused = self._refused, []
        return refused

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its blocks; returns its final output."""
        req = self._requests.get(request_id)
        if req is None:
            return None
        self._compiling.pop(request_id, None)
        self._adapter_wait.pop(request_id, None)
        for seq, out in zip(req.seqs, req.outputs):
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
                out.finish_reason = "abort"
                req.touched.add(seq.index)
        return self._emit(req)

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self._compiling or self._adapter_wait)

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    # ---- stepping ---------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        if self._compiling:
            self._admit_compiled()
        if self._adapter_wait or self.adapters.busy():
            self._admit_adapted()
        started = time.monotonic()
        plan = self.scheduler.schedule()
        result = self.runner.execute(plan)
        advanced = self.scheduler.update(plan, result)
        self._steps += 1
        prompt_tokens = sum(max(0, min(c.end, c.seq.num_prompt_tokens) - c.start)
                            for c in plan.chunks)
        self._prompt_tokens += prompt_tokens
        if prompt_tokens:
            self._prefill_seconds = time.monotonic() - started
        self._generation_tokens += len(advanced)
        touched: dict[str, _Request] = {}
        for seq in advanced:
            req = self._requests[seq.request_id]
            out = req.outputs[seq.index]
            detok = req.detoks[seq.index]
            token = seq.output_token_ids[-1]
            out.token_ids.append(token)
            out.delta_token_ids.append(token)
            detok.add_token(token)
            if detok.stop_reason is not None and not seq.is_finished:
                self.scheduler.finish(seq, "stop", detok.stop_reason)
            if out.logprobs is not None:
                sampled = result.sampled[seq.seq_id]
                lp = TokenLogprob(token, self.tokenizer.token_text(token), sampled.logprob or 0.0,
                                  [(t, self.tokenizer.token_text(t), v) for t, v in sampled.top])
                out.logprobs.append(lp)
                out.delta_logprobs.append(lp)
            if seq.is_finished:
                out.finish_reason = seq.finish_reason
                out.stop_reason = seq.stop_reason
            req.touched.add(seq.index)
            touched[req.request_id] = req
        return [self._emit(req) for req in touched.values()]

    def _emit(self, req: _Request) -> RequestOutput:
        outs = []
        for i, (seq, out, detok) in enumerate(zip(req.seqs, req.outputs, req.detoks)):
            if i in req.touched:
                out.delta_text = detok.take_delta(final=seq.is_finished)
                out.text += out.delta_text
            snapshot = CompletionOutput(
                out.index, out.text, list(out.token_ids),
                None if out.logprobs is None else list(out.logprobs), out.finish_reason,
                out.stop_reason, out.delta_text if i in req.touched else "",
                list(out.delta_token_ids), list(out.delta_logprobs))
            out.delta_text, out.delta_token_ids, out.delta_logprobs = "", [], []
            outs.append(snapshot)
        req.touched.clear()
        finished = all(s.is_finished for s in req.seqs)
        head = req.seqs[0]
        metrics = RequestMetrics(
            arrival=min(s.times.arrival for s in req.seqs),
            first_scheduled=head.times.first_scheduled,
            first_token=min((s.times.first_token for s in req.seqs if s.times.first_token),
                            default=None),
            last_token=max((s.times.last_token for s in req.seqs if s.times.last_token),
                           default=None),
            finished=max((s.times.finished or 0.0) for s in req.seqs) if finished else None,
            num_cached_prompt_tokens=head.num_cached_prompt_tokens,
        )
        if finished:
            del self._requests[req.request_id]
            if req.slot is not None:
                self.adapters.release(req.adapter)
        return RequestOutput(req.request_id, req.prompt_token_ids, outs, finished, metrics)

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            kv_cache_usage=bm.usage,
            num_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            prefix_cache_queries=bm.stats.queries,
            prefix_cache_hits=bm.stats.hits,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
            steps=self._steps,
            prefill_seconds=self._prefill_seconds,
            adapters=self.adapters.snapshot(),
        )
