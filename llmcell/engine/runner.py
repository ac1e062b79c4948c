"""Model runner: turns a scheduler plan into tensors, runs the model, samples the next tokens.

It owns the model weights and the KV cache tensors, and reads sequences' block tables; it never
changes a sequence or a block table (the scheduler and block manager do).
"""

from __future__ import annotations

import numpy as np
import torch

from llmcell.engine.lora.weights import LoraBatch, LoraStack
from llmcell.engine.models.attention import (AttentionMetadata, DecodeGroup, NativeDecode,
                                             PagedKVCache, PrefillSpan, native_prefix)
from llmcell.engine.models.llama import LlamaModel
from llmcell.engine.sampling.sampler import Sampler, SamplingRow
from llmcell.engine.scheduler.plan import SchedulerPlan, StepResult


class ModelRunner:
    def __init__(self, model: LlamaModel, cache: PagedKVCache, seed: int = 0,
                 kernels=None) -> None:
        self.model = model
        self.cache = cache
        self.kernels = kernels
        """The native paged-attention kernels (CPU), or None for the PyTorch path."""
        self.device = model.device
        self.block_size = cache.block_size
        self.sampler = Sampler(model.device, seed)
        self.lora: LoraStack | None = None
        """The resident LoRA adapters (set by the core)."""

    def _slots(self, table: list[int], start: int, end: int) -> np.ndarray:
        pos = np.arange(start, end)
        blocks = np.asarray(table, dtype=np.int64)[pos // self.block_size]
        return blocks * self.block_size + pos % self.block_size

    def build_inputs(self, plan: SchedulerPlan):
        bs = self.block_size
        dev = self.device
        tokens: list[int] = []
        positions: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        decode_chunks = sorted((c for c in plan.chunks if c.num_tokens == 1), key=lambda c: c.start)
        prefill_chunks = [c for c in plan.chunks if c.num_tokens > 1]
        for c in decode_chunks:
            tokens.append(c.seq.token_at(c.start))
        if decode_chunks:
            starts = np.fromiter((c.start for c in decode_chunks), dtype=np.int64)
            positions.append(starts)
            slots.append(np.fromiter(
                (c.seq.block_table[c.start // bs] * bs + c.start % bs for c in decode_chunks),
                dtype=np.int64))
        spans: list[PrefillSpan] = []
        row = len(decode_chunks)
        for c in prefill_chunks:
            tokens.extend(c.seq.tokens_slice(c.start, c.end))
            positions.append(np.arange(c.start, c.end))
            slots.append(self._slots(c.seq.block_table, c.start, c.end))
            block_ids = mask = None
            if c.start > 0:
                nblocks = -(-c.end // bs)
                block_ids = torch.tensor(c.seq.block_table[:nblocks], dtype=torch.long,
                                         device=dev)
                if not native_prefix(self.kernels, c.num_tokens):  # gather + SDPA: a mask
                    q_pos = torch.arange(c.start, c.end, device=dev).unsqueeze(1)
                    mask = torch.arange(c.end, device=dev).unsqueeze(0) <= q_pos
            spans.append(PrefillSpan(row, c.num_tokens, c.start, block_ids, mask))
            row += c.num_tokens

        native = groups = None
        if self.kernels is not None and decode_chunks:
            native = self._native_decode(decode_chunks)
        else:
            groups = self._decode_groups(decode_chunks)
        meta = AttentionMetadata(
            slot_mapping=torch.from_numpy(np.concatenate(slots)).to(dev),
            decode_groups=groups or [],
            prefills=spans,
            native_decode=native,
            kernels=self.kernels,
        )
        input_ids = torch.tensor(tokens, dtype=torch.long, device=dev)
        pos = torch.from_numpy(np.concatenate(positions)).to(dev)
        return input_ids, pos, meta, decode_chunks + prefill_chunks

    def _native_decode(self, chunks) -> NativeDecode:
        bs = self.block_size
        nblocks = [-(-(c.start + 1) // bs) for c in chunks]
        table = np.zeros((len(chunks), max(nblocks)), dtype=np.int64)
        for j, (c, n) in enumerate(zip(chunks, nblocks)):
            table[j, :n] = c.seq.block_table[:n]
        lens = np.fromiter((c.start + 1 for c in chunks), dtype=np.int64, count=len(chunks))
        return NativeDecode(len(chunks), torch.from_numpy(table),
                            torch.from_numpy(lens))

    def _decode_groups(self, chunks) -> list[DecodeGroup]:
        """Split decodes (sorted by context) where padding to the group's longest would waste
        more than a third of the gathered slots."""
        bs, dev = self.block_size, self.device
        nblocks = [-(-(c.start + 1) // bs) for c in chunks]
        groups: list[DecodeGroup] = []
        first = 0
        for i in range(1, len(chunks) + 1):
            if i < len(chunks):
                count = i + 1 - first
                used = sum(nblocks[first : i + 1])
                if used * 3 >= count * nblocks[i] * 2 or nblocks[i] - nblocks[first] <= 2:
                    continue
            group = chunks[first:i]
            width = nblocks[i - 1]
            table = np.zeros((len(group), width), dtype=np.int64)
            for j, c in enumerate(group):
                table[j, : nblocks[first + j]] = c.seq.block_table[: nblocks[first + j]]
            lens = [c.start + 1 for c in group]
            if min(lens) == max(lens):  # no padding: attend to exactly `lens` slots, no mask
                mask = None
                context = lens[0]
            else:
                ctx = torch.tensor(lens, device=dev)
                mask = (torch.arange(width * bs, device=dev).unsqueeze(0) < ctx.unsqueeze(1))
                mask = mask.view(len(group), 1, 1, -1)
                context = width * bs
            groups.append(DecodeGroup(first, len(group), torch.from_numpy(table).to(dev), mask,
                                      context))
            first = i
        return groups

    @torch.inference_mode()
    def execute(self, plan: SchedulerPlan) -> StepResult:
        self.sampler.release(plan.released_seq_ids)
        result = StepResult()
        if plan.is_empty:
            return result
        input_ids, positions, meta, ordered = self.build_inputs(plan)
        sample_rows: list[int] = []
        rows: list[SamplingRow] = []
        row = 0
        for c in ordered:
            row += c.num_tokens
            if c.sample:
                sample_rows.append(row - 1)
                s = c.seq
                rows.append(SamplingRow(s.seq_id, s.params, s.prompt_token_ids, s.output_token_ids,
                                        s.grammar, s.eos_token_ids))
        idx = torch.tensor(sample_rows, device=self.device) if rows else None
        masks = self.sampler.guided.begin(rows, self.model.full_vocab)  # while the model runs
        logits = self.run_model(input_ids, positions, meta, idx, self._lora(ordered))
        if logits is None:
            return result
        for r, tok in zip(rows, self.sampler(logits, rows, masks)):
            result.sampled[r.seq_id] = tok
        return result

    def _lora(self, ordered) -> LoraBatch | None:
        """The step's LoRA masks (None: every row runs the base)."""
        if self.lora is None or all(c.seq.adapter is None for c in ordered):
            return None
        return self.lora.batch([-1 if c.seq.adapter is None else c.seq.adapter
                                for c in ordered for _ in range(c.num_tokens)])

    def run_model(self, input_ids: torch.Tensor, positions: torch.Tensor,
                  meta: AttentionMetadata, sample_idx: torch.Tensor | None,
                  lora: LoraBatch | None = None) -> torch.Tensor | None:
        """The model's part of a step (what every rank of a group runs): logits of the rows to
        sample, or None when no row samples."""
        hidden = self.model.forward(input_ids, positions, meta, self.cache, lora)
        if sample_idx is None:
            return None
        return self.model.logits(hidden.index_select(0, sample_idx))

    def forward_logits(self, plan: SchedulerPlan) -> torch.Tensor:
        """Logits for every token of the plan (tests compare them with a reference model)."""
        input_ids, positions, meta, ordered = self.build_inputs(plan)
        hidden = self.model.forward(input_ids, positions, meta, self.cache, self._lora(ordered))
        return self.model.logits(hidden)
