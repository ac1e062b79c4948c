"""Continuous-batching scheduler with chunked prefill and preemption by recomputation.

Each step, `schedule()` spends a token budget: first one token for every running sequence that is
decoding, then prefill chunks of running sequences, then admits waiting sequences (prefix cache
first, then chunks of what remains). When the cache has no room, the newest running sequence is
preempted: its blocks are freed and it goes back to the head of the queue to be recomputed later.
`update(plan, result)` applies sampled tokens, finishes sequences and releases their blocks.

Priorities (`SamplingParams.priority`, lower first: online 0, batch 1): the queue is ordered by
priority, first come first served within one; a preemption takes the newest sequence of the
lowest priority; a waiting sequence that finds no room (cache or `max_num_seqs`) preempts a
running one of lower priority; and a step that prefills a prompt runs no lower-priority work
(a batch's decodes wait that step). Batch work fills what online work leaves and gives it back.
"""

from __future__ import annotations

import time
from collections import deque

from llmcell.engine.kv_cache import BlockManager
from llmcell.engine.scheduler.plan import ScheduledChunk, SchedulerPlan, StepResult
from llmcell.engine.sequence import Sequence, SequenceStatus


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._released: list[int] = []
        self._request_heads: dict[str, Sequence] = {}  # request id -> its first sibling

    # ---- intake ------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        if seq.num_prompt_tokens + seq.params.max_tokens > self.max_model_len:
            raise ValueError(
                f"prompt ({seq.num_prompt_tokens} tokens) + max_tokens ({seq.params.max_tokens}) exceeds "
                f"the model's context length of {self.max_model_len} tokens"
            )
        if seq.index == 0:
            self._request_heads[seq.request_id] = seq
        self._enqueue(seq, behind_equals=True)

    def _enqueue(self, seq: Sequence, behind_equals: bool) -> None:
        """Into the queue by priority: behind the sequences of its priority (new), or ahead of
        them (preempted, so it resumes first)."""
        p = seq.params.priority
        if not self.waiting or self.waiting[-1].params.priority <= p and behind_equals:
            self.waiting.append(seq)
            return
        for i, other in enumerate(self.waiting):
            q = other.params.priority
            if q > p or (q == p and not behind_equals):
                self.waiting.insert(i, seq)
                return
        self.waiting.append(seq)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # ---- plan ----------------------------------------------------------------------------------
    def schedule(self) -> SchedulerPlan:
        plan = SchedulerPlan(released_seq_ids=self._released)
        self._released = []
        budget = self.max_num_batched_tokens
        bm = self.block_manager
        scheduled: set[int] = set()
        cap = self._yield_to()

        # 1) running sequences: decodes first (one token each), then prefill chunks.
        for want_decode in (True, False):
            i = 0
            while i < len(self.running) and budget > 0:
                seq = self.running[i]
                remaining = seq.num_tokens - seq.num_computed_tokens
                is_decode = remaining == 1
                if seq.seq_id in scheduled or is_decode != want_decode or remaining <= 0 or (
                        cap is not None and seq.params.priority > cap):
                    i += 1
                    continue
                n = min(remaining, budget)
                while not bm.allocate_slots(seq, n):
                    victim = self._victim()
                    if self.running.index(victim) < i:
                        i -= 1  # an earlier one leaves: this one moves down a place
                    budget += self._preempt(victim, plan)
                    if victim is seq:
                        break
                if seq.status is not SequenceStatus.RUNNING:
                    break  # preempted itself: nothing smaller can fit either
                plan.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, n, n == remaining))
                scheduled.add(seq.seq_id)
                budget -= n
                i += 1

        # 2) admit waiting sequences while there is budget and no one was preempted this step
        #    (but for room taken from lower-priority work).
        if not plan.preempted:
            skipped: list[Sequence] = []
            while self.waiting and budget > 0:
                seq = self.waiting.popleft()
                if cap is not None and seq.params.priority > cap:
                    self.waiting.appendleft(seq)
                    break
                if self._waits_for_sibling(seq):
                    skipped.append(seq)
                    continue
                if len(self.running) >= self.max_num_seqs:
                    freed = self._preempt_for(seq, plan)
                    if freed is None:
                        self.waiting.appendleft(seq)
                        break
                    budget += freed
                if not seq.block_table:
                    seq.num_cached_prompt_tokens = bm.attach_cached_prefix(seq)
                remaining = seq.num_tokens - seq.num_computed_tokens
                n = min(remaining, budget)
                fits = bm.allocate_slots(seq, n)
                while not fits and (freed := self._preempt_for(seq, plan)) is not None:
                    budget += freed
                    fits = bm.allocate_slots(seq, n)
                if not fits:
                    bm.free(seq)
                    self.waiting.appendleft(seq)
                    break
                seq.status = SequenceStatus.RUNNING
                if seq.times.first_scheduled is None:
                    seq.times.first_scheduled = time.monotonic()
                self.running.append(seq)
                plan.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, n, n == remaining))
                budget -= n
            for seq in reversed(skipped):
                self.waiting.appendleft(seq)

        plan.chunks.sort(key=lambda c: c.num_tokens != 1)  # stable: decodes first
        return plan

    def _yield_to(self) -> int | None:
        """The priority a step is kept for: when a sequence must prefill (a waiting one, or a
        running one mid-prompt) and lower-priority ones are running, the step runs only that
        priority and above, so an online prompt is not slowed by a batch's decodes (they wait
        one step). None: every sequence runs."""
        pending = [s.params.priority for s in self.running
                   if s.num_tokens - s.num_computed_tokens > 1]
        if self.waiting:
            pending.append(self.waiting[0].params.priority)
        if not pending:
            return None
        top = min(pending)
        return top if any(s.params.priority > top for s in self.running) else None

    def _waits_for_sibling(self, seq: Sequence) -> bool:
        """Siblings of an n>1 request wait until the first has its prompt cached, then share it."""
        if seq.index == 0 or not self.block_manager.enable_prefix_caching:
            return False
        head = self._request_heads.get(seq.request_id)
        if head is None or head.is_finished:
            return False
        return head.num_computed_tokens < head.num_prompt_tokens

    def _victim(self) -> Sequence:
        """The newest running sequence of the lowest priority (the highest value)."""
        lowest = max(s.params.priority for s in self.running)
        return next(s for s in reversed(self.running) if s.params.priority == lowest)

    def _preempt_for(self, seq: Sequence, plan: SchedulerPlan) -> int | None:
        """Make room for `seq` by preempting a running sequence of lower priority; the tokens
        its dropped chunk had taken of the step's budget, or None when there is none."""
        if not self.running:
            return None
        victim = self._victim()
        if victim.params.priority <= seq.params.priority:
            return None
        return self._preempt(victim, plan)

    def _preempt(self, seq: Sequence, plan: SchedulerPlan) -> int:
        """Back to the queue, its blocks freed; returns the budget its chunk in this plan had
        taken (the chunk is dropped)."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        freed = sum(c.num_tokens for c in plan.chunks if c.seq is seq)
        if freed:
            plan.chunks[:] = [c for c in plan.chunks if c.seq is not seq]
        self._enqueue(seq, behind_equals=False)
        plan.preempted.append(seq)
        return freed

    # ---- apply -------------------------------------------------------------------------------
    def update(self, plan: SchedulerPlan, result: StepResult) -> list[Sequence]:
        """Apply a step's results; return the sequences that received a new token."""
        now = time.monotonic()
        advanced: list[Sequence] = []
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed_tokens = chunk.end
            self.block_manager.commit_full_blocks(seq)
            if not chunk.sample:
                continue
            sampled = result.sampled.get(seq.seq_id)
            if sampled is None:
                raise RuntimeError(f"runner returned no token for sequence {seq.seq_id}")
            seq.output_token_ids.append(sampled.token_id)
            if seq.times.first_token is None:
                seq.times.first_token = now
            seq.times.last_token = now
            advanced.append(seq)
            reason = self._check_finished(seq, sampled.token_id)
            if reason is not None:
                self.finish(seq, reason[0], reason[1])
        return advanced

    def _check_finished(self, seq: Sequence, token_id: int) -> tuple[str, int | None] | None:
        params = seq.params
        if not params.ignore_eos and token_id in seq.eos_token_ids:
            return ("stop", None)
        if token_id in params.stop_token_ids:
            return ("stop", token_id)
        if len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return ("length", None)
        return None

    def finish(self, seq: Sequence, reason: str, stop_reason: str | int | None = None) -> None:
        """End a sequence (finished, stopped by a string, or aborted) and free its blocks now."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        seq.times.finished = time.monotonic()
        self._released.append(seq.seq_id)
        head = self._request_heads.get(seq.request_id)
        if head is seq:
            # keep the head while siblings still wait on it; they stop waiting once it is finished
            del self._request_heads[seq.request_id]
