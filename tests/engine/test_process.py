"""The engine core in its own process: same tokens as in process, aborts free blocks over the
socket, a dead child fails what is in flight, loading errors reach the caller, framing holds."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from llmcell.config import EngineConfig
from llmcell.engine import LLM, EngineDeadError, SamplingParams
from llmcell.engine.async_engine import delivery_order
from llmcell.engine.outputs import CompletionOutput, RequestOutput
from llmcell.engine.messages import (AbortRequest, AddRequest, Commands, FrameReader, Outputs,
                                     RequestError, Stop, frame)
from llmcell.engine.process import ProcessEngine

CONFIG = EngineConfig(kv_cache_memory=64 << 20, threads=1)


async def until(predicate, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def test_process_engine_matches_in_process_engine_and_aborts_free_blocks(checkpoint,
                                                                         chat_prompt_ids):
    params = SamplingParams(max_tokens=16, temperature=0.0)
    expected = [o.outputs[0].token_ids for o in
                LLM(checkpoint=checkpoint, kv_cache_memory=64 << 20).generate(chat_prompt_ids,
                                                                              params)]

    async def scenario():
        engine = await ProcessEngine.start(CONFIG, nice=2)
        try:
            assert engine.is_alive and engine.max_model_len > 0
            assert engine.vocab_size == checkpoint.config.vocab_size

            async def run(i: int, ids: list[int]) -> tuple[list[int], str, str]:
                outs = [out async for out in engine.generate(ids, params, f"r{i}")]
                deltas = "".join(o.outputs[0].delta_text for o in outs)
                return outs[-1].outputs[0].token_ids, deltas, outs[-1].outputs[0].text

            results = await asyncio.gather(*[run(i, ids) for i, ids in enumerate(chat_prompt_ids)])
            assert [r[0] for r in results] == expected
            assert all(deltas == text for _, deltas, text in results)

            stream = engine.submit(chat_prompt_ids[0],
                                   SamplingParams(max_tokens=400, ignore_eos=True), "long")
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 3:
                    break
            assert engine.stats().num_running == 1 and engine.stats().kv_cache_usage > 0
            stream.close()  # the client left: the child aborts it and reports freed blocks
            s = engine.stats
            assert await until(lambda: s().num_running == 0 and
                               s().num_free_blocks == s().num_blocks), engine.stats()

            with pytest.raises(ValueError, match="maximum context length"):
                engine.submit(chat_prompt_ids[0], SamplingParams(max_tokens=10**6), "huge")
            with pytest.raises(ValueError, match="token ids must be in"):
                engine.submit([engine.vocab_size + 5], params, "bad")
        finally:
            await engine.aclose()
        assert engine._process.returncode == 0 and not engine.is_alive

    asyncio.run(scenario())


def test_a_dead_engine_process_fails_requests_in_flight_and_after():
    async def scenario():
        engine = await ProcessEngine.start(CONFIG, idle=True)
        try:
            ids = engine.tokenizer.encode("Tell me everything about the ocean.")
            stream = engine.submit(ids, SamplingParams(max_tokens=400, ignore_eos=True), "a")
            first = await stream.__anext__()
            assert first.outputs[0].token_ids
            if hasattr(os, "SCHED_IDLE"):  # every thread of the engine, torch's included
                threads = [int(t) for t in os.listdir(f"/proc/{engine.pid}/task")]
                assert len(threads) > 1
                assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
            os.kill(engine.pid, signal.SIGKILL)
            with pytest.raises(EngineDeadError, match="engine process exited"):
                async for _ in stream:
                    pass
            assert not engine.is_alive and engine.failed
            with pytest.raises(EngineDeadError):
                engine.submit(ids, SamplingParams(max_tokens=4), "b")
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def test_a_model_that_cannot_load_raises_in_the_caller():
    async def scenario():
        with pytest.raises(ValueError, match="no such file"):
            await ProcessEngine.start(EngineConfig(model="/nonexistent/model.gguf"))

    asyncio.run(scenario())


def test_nice_out_of_range_is_refused():
    with pytest.raises(ValueError, match="nice=20"):
        asyncio.run(ProcessEngine.start(CONFIG, nice=20))


def test_frames_reassemble_from_any_split():
    messages = [Commands((AddRequest("r1", [1] * 5000, SamplingParams(), 1.0),
                          AbortRequest("r0"))),
                Outputs([_output("r1", 3, 1)], None, (RequestError("r1", "bad"),)), Stop()]
    data = b"".join(frame(m) for m in messages)
    for step in (1, 3, 7, 4096, len(data)):
        reader, got = FrameReader(), []
        for at in range(0, len(data), step):
            got += reader.feed(data[at:at + step])
        assert got == messages


def _output(rid: str, tokens: int, delta: int, finished: bool = False) -> RequestOutput:
    ids = list(range(tokens))
    return RequestOutput(rid, [1], [CompletionOutput(0, "", ids, delta_token_ids=ids[-delta:])],
                         finished)


def test_delivery_order_puts_first_tokens_first_and_finished_requests_last():
    outs = [_output("done", 9, 1, finished=True), _output("running", 5, 1),
            _output("new", 1, 1), _output("running2", 7, 1), _output("new2", 3, 3)]
    assert [o.request_id for o in delivery_order(outs)] == ["new", "new2", "running",
                                                            "running2", "done"]
