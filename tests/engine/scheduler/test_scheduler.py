"""Scheduler plan/update contract with hand-built step results (no model, no tensors)."""

from __future__ import annotations

import pytest

from llmcell.engine.kv_cache import BlockManager
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.scheduler import SampledToken, Scheduler, StepResult
from llmcell.engine.sequence import Sequence, SequenceStatus

_ids = iter(range(10**6))
EOS = 0


def make_seq(n_prompt: int, max_tokens: int = 100, rid: str | None = None, index: int = 0,
             base: int = 1000) -> Sequence:
    sid = next(_ids)
    return Sequence(sid, rid or f"r{sid}", index, list(range(base, base + n_prompt)),
                    SamplingParams(max_tokens=max_tokens), eos_token_ids=frozenset({EOS}))


def make_scheduler(num_blocks=64, block_size=4, max_seqs=8, budget=32, max_len=4096,
                   prefix=True) -> Scheduler:
    bm = BlockManager(num_blocks, block_size, prefix)
    return Scheduler(bm, max_seqs, budget, max_len)


def fake_result(plan, token: int = 7) -> StepResult:
    return StepResult({c.seq.seq_id: SampledToken(token) for c in plan.chunks if c.sample})


def run_step(s: Scheduler, token: int = 7):
    plan = s.schedule()
    s.update(plan, fake_result(plan, token))
    return plan


def test_long_prompt_is_prefilled_in_chunks_next_to_decodes():
    s = make_scheduler(num_blocks=256, budget=16)
    a = make_seq(4)
    s.add(a)
    run_step(s)  # a prefilled, got its first token
    long = make_seq(50, base=5000)
    s.add(long)
    sizes = []
    while long.num_computed_tokens < 50:
        plan = run_step(s)
        chunks = {c.seq.seq_id: c for c in plan.chunks}
        assert chunks[a.seq_id].num_tokens == 1, "the running decode must never stall"
        assert plan.num_batched_tokens <= 16
        sizes.append(chunks[long.seq_id].num_tokens)
    assert sizes == [15, 15, 15, 5]
    assert plan.chunks[0].seq is a  # decodes come first in the plan


def test_newest_sequence_is_preempted_when_blocks_run_out():
    s = make_scheduler(num_blocks=4, block_size=4, budget=64)
    old, new = make_seq(7), make_seq(7, base=3000)
    s.add(old)
    s.add(new)
    run_step(s)  # both prefilled: 2 blocks each, pool exhausted
    assert s.block_manager.num_free_blocks == 0
    plan = run_step(s)  # position 7 still fits in each second block
    assert plan.preempted == []
    plan = run_step(s)  # old needs a third block for position 8: the newest is preempted
    assert plan.preempted == [new]
    assert new.status is SequenceStatus.WAITING and new.block_table == []
    assert new.num_computed_tokens == 0 and len(new.output_token_ids) >= 1
    assert s.num_preemptions == 1 and s.waiting[0] is new
    assert old.status is SequenceStatus.RUNNING


def test_preempted_sequence_resumes_and_recomputes_its_output():
    s = make_scheduler(num_blocks=4, block_size=4, budget=64)
    old, new = make_seq(7, max_tokens=3), make_seq(7, base=3000, max_tokens=3)
    s.add(old)
    s.add(new)
    steps = 0
    while s.has_work():
        run_step(s)
        steps += 1
        assert steps < 50, "scheduler must make progress (no deadlock)"
    assert old.is_finished and new.is_finished
    assert len(new.output_token_ids) == 3 and new.finish_reason == "length"
    assert s.block_manager.num_free_blocks == 4


def test_prefix_hit_skips_cached_prompt_tokens():
    s = make_scheduler(num_blocks=64, block_size=4, budget=100)
    a = make_seq(18)
    s.add(a)
    run_step(s)
    b = make_seq(18)  # same prompt tokens
    s.add(b)
    plan = s.schedule()
    chunk = next(c for c in plan.chunks if c.seq is b)
    assert b.num_cached_prompt_tokens == 16
    assert (chunk.start, chunk.num_tokens) == (16, 2)
    assert b.block_table[:4] == a.block_table[:4]


def test_finish_on_eos_stop_token_and_length():
    s = make_scheduler()
    a = make_seq(3)
    b = Sequence(next(_ids), "b", 0, [5, 6], SamplingParams(max_tokens=50, stop_token_ids=(42,)))
    c = make_seq(3, max_tokens=2)
    for x in (a, b, c):
        s.add(x)
    plan = s.schedule()
    result = StepResult({a.seq_id: SampledToken(EOS), b.seq_id: SampledToken(42),
                         c.seq_id: SampledToken(9)})
    s.update(plan, result)
    assert a.finish_reason == "stop" and a.stop_reason is None
    assert b.finish_reason == "stop" and b.stop_reason == 42
    assert not c.is_finished
    run_step(s)
    assert c.finish_reason == "length" and len(c.output_token_ids) == 2
    assert s.block_manager.num_free_blocks == s.block_manager.num_blocks


def test_finish_frees_blocks_and_reports_release():
    s = make_scheduler()
    a = make_seq(10)
    s.add(a)
    run_step(s)
    assert a.block_table
    s.finish(a, "abort")
    assert a.block_table == [] and a.finish_reason == "abort"
    assert s.block_manager.num_free_blocks == s.block_manager.num_blocks
    assert a.seq_id in s.schedule().released_seq_ids


def test_siblings_wait_for_the_first_prompt_then_share_it():
    s = make_scheduler(num_blocks=64, block_size=4, budget=64)
    first = make_seq(13, rid="req", index=0)
    second = make_seq(13, rid="req", index=1)
    s.add(first)
    s.add(second)
    plan = s.schedule()
    assert [c.seq for c in plan.chunks] == [first]
    s.update(plan, fake_result(plan))
    plan = s.schedule()
    chunk = next(c for c in plan.chunks if c.seq is second)
    assert chunk.start == 12 and second.block_table[:3] == first.block_table[:3]


def test_admission_respects_max_num_seqs_and_budget():
    s = make_scheduler(max_seqs=2, budget=10)
    seqs = [make_seq(4, base=100 * i) for i in range(4)]
    for x in seqs:
        s.add(x)
    plan = s.schedule()
    assert len(plan.chunks) == 2 and s.num_waiting == 2


def test_request_longer_than_the_context_is_refused():
    s = make_scheduler(max_len=16)
    with pytest.raises(ValueError, match="context length of 16"):
        s.add(make_seq(10, max_tokens=10))


def make_prio_seq(n_prompt: int, priority: int, max_tokens: int = 100, base: int = 1000
                  ) -> Sequence:
    sid = next(_ids)
    return Sequence(sid, f"r{sid}", 0, list(range(base, base + n_prompt)),
                    SamplingParams(max_tokens=max_tokens, priority=priority),
                    eos_token_ids=frozenset({EOS}))


def test_online_sequences_are_admitted_ahead_of_waiting_batch_ones():
    s = make_scheduler(num_blocks=256, max_seqs=2, budget=64)
    batch = [make_prio_seq(4, 1, base=100 * i) for i in range(1, 4)]
    for seq in batch:
        s.add(seq)
    online = make_prio_seq(4, 0, base=9000)
    s.add(online)
    assert [q.params.priority for q in s.waiting] == [0, 1, 1, 1]
    run_step(s)
    assert online.status is SequenceStatus.RUNNING and batch[0].status is SequenceStatus.RUNNING
    assert list(s.waiting) == batch[1:]  # first come first served within a priority


def test_a_waiting_online_sequence_takes_a_batch_sequences_place_when_the_cell_is_full():
    s = make_scheduler(num_blocks=256, max_seqs=2, budget=64)
    batch = [make_prio_seq(4, 1, base=100 * i) for i in range(1, 4)]
    for seq in batch:
        s.add(seq)
    run_step(s)
    assert [q.status for q in batch[:2]] == [SequenceStatus.RUNNING] * 2
    online = make_prio_seq(4, 0, base=9000)
    s.add(online)
    plan = run_step(s)
    assert online.status is SequenceStatus.RUNNING
    assert plan.preempted == [batch[1]] and batch[0].status is SequenceStatus.RUNNING
    assert all(c.seq is not batch[1] for c in plan.chunks)  # its planned decode was dropped
    assert list(s.waiting) == [batch[1], batch[2]]  # the preempted one resumes first
    while not online.is_finished:
        run_step(s)
    assert s.num_preemptions == 1


def test_online_work_short_of_cache_preempts_batch_work_not_its_own():
    s = make_scheduler(num_blocks=6, block_size=4, max_seqs=8, budget=64)
    batch = make_prio_seq(11, 1, base=100)  # 3 blocks
    first = make_prio_seq(7, 0, base=5000)  # 2 blocks
    s.add(batch)
    s.add(first)
    run_step(s)
    assert batch.status is SequenceStatus.RUNNING and first.status is SequenceStatus.RUNNING
    second = make_prio_seq(7, 0, base=7000)  # 2 more: only the batch's blocks can make room
    s.add(second)
    plan = run_step(s)
    assert plan.preempted == [batch] and second.status is SequenceStatus.RUNNING
    assert first.status is SequenceStatus.RUNNING
    assert list(s.waiting) == [batch]


def test_equal_priorities_keep_the_old_order_and_preempt_the_newest():
    s = make_scheduler(num_blocks=4, block_size=4, budget=64)
    old, new = make_prio_seq(7, 1), make_prio_seq(7, 1, base=3000)
    s.add(old)
    s.add(new)
    run_step(s)
    for _ in range(3):
        run_step(s)
    assert new.num_preemptions >= 1 and old.num_preemptions == 0


def test_a_priority_outside_0_to_9_is_refused():
    from llmcell.protocol.sampling import SamplingError
    with pytest.raises(SamplingError):
        SamplingParams(priority=10)


def test_a_step_that_prefills_an_online_prompt_leaves_the_batch_decodes_for_the_next():
    s = make_scheduler(num_blocks=256, max_seqs=8, budget=64)
    batch = [make_prio_seq(4, 1, base=100 * i) for i in range(1, 4)]
    for seq in batch:
        s.add(seq)
    run_step(s)
    online = make_prio_seq(6, 0, base=9000)
    s.add(online)
    plan = run_step(s)
    assert [c.seq for c in plan.chunks] == [online] and not plan.preempted
    plan = run_step(s)  # the online request decodes now, and the batch goes on beside it
    assert {c.seq.seq_id for c in plan.chunks} == {online.seq_id, *(b.seq_id for b in batch)}
    assert all(c.num_tokens == 1 for c in plan.chunks)
