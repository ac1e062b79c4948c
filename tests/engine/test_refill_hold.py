"""The refill hold: after a step that finished requests, the engine loop (in its process, or on a
thread) waits briefly for the requests that replace them, so that a closed-loop client's next
request joins the next step instead of waiting for it whole. Driven with a core that only records
which requests each step ran (its steps take a fixed time), so what is checked is the loop."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from llmcell.config import EngineConfig
from llmcell.engine import loop as engine_loop
from llmcell.engine.async_engine import AsyncEngine
from llmcell.engine.holds import HOLD_FRACTION, refill_hold
from llmcell.engine.loop import IDLE_WAIT
from llmcell.engine.messages import (AbortRequest, AddRequest, Commands, Outputs, Stop,
                                     count_adds)
from llmcell.engine.outputs import CompletionOutput, RequestOutput
from llmcell.engine.kv_cache.block_manager import BlockManager
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.stats import EngineStats

STEP = 0.25  # seconds a recorded step takes: a hold of min(the limit, 2% of it)
LIMIT = EngineConfig.step_hold_ms / 1e3


def stats(running: int, waiting: int = 0) -> EngineStats:
    return EngineStats(running, waiting, 0.0, 10, 10, 0, 0, 0, 0, 0, 0)


class RecordingCore:
    """Runs each request for its `max_tokens` steps; records which requests each step ran."""

    def __init__(self, hold_ms: float = EngineConfig.step_hold_ms) -> None:
        self.config = SimpleNamespace(step_hold_ms=hold_ms)
        self.left: dict[str, int] = {}
        self.steps: list[list[str]] = []
        self.tokenizer = None
        self.max_model_len = 1000
        self.model_config = SimpleNamespace(vocab_size=100)
        self.block_manager = BlockManager(8, 4)

    def check_request(self, ids, params) -> None:
        pass

    def add_request(self, rid, ids, params, arrival, resume=None, adapter=None) -> None:
        self.left[rid] = params.max_tokens

    def abort(self, rid):
        self.left.pop(rid, None)

    def has_work(self) -> bool:
        return bool(self.left)

    def stats(self) -> EngineStats:
        return stats(len(self.left))

    def take_refused(self) -> list[tuple[str, str]]:
        return []  # no grammars here: nothing is refused after it was added

    def step(self) -> list[RequestOutput]:
        self.steps.append(sorted(self.left))
        time.sleep(STEP)
        outs = []
        for rid in list(self.left):
            self.left[rid] -= 1
            done = self.left[rid] == 0
            if done:
                del self.left[rid]
            outs.append(RequestOutput(rid, [1], [CompletionOutput(
                0, "x", [1], finish_reason="length" if done else None, delta_token_ids=[1])],
                done))
        return outs


def add(rid: str, steps: int) -> AddRequest:
    return AddRequest(rid, [1], SamplingParams(max_tokens=steps), time.monotonic())


def test_the_hold_is_a_small_share_of_a_step_and_only_after_a_step_that_freed_slots():
    assert refill_hold(0, 0.3, stats(4), LIMIT) == 0.0  # nothing finished: nothing to replace
    assert refill_hold(2, 0.3, stats(4, waiting=1), LIMIT) == 0.0  # queued ones take the slots
    assert refill_hold(1, 0.1, stats(4), LIMIT) == pytest.approx(HOLD_FRACTION * 0.1)
    assert refill_hold(1, 30.0, stats(4), LIMIT) == LIMIT
    assert refill_hold(1, 30.0, stats(4), 0.0) == 0.0  # turned off


def test_adds_are_counted_inside_batches():
    assert count_adds([Commands((add("a", 1), AbortRequest("x"), add("b", 1))),
                       Commands((add("c", 1),)), Commands((AbortRequest("y"),)), Stop()]) == 3


class LateChannel:
    """The engine loop's channel: "a" and "b" come first; "c" comes `late` seconds after the frame
    that finished "a" (a client that read its answer and sent its next request through a server);
    once the engine is idle again, "stop"."""

    def __init__(self, late: float) -> None:
        self.late = late
        self.finished_at: float | None = None
        self.started = self.sent_c = False
        self.holds: list[float] = []  # the waits the loop asked for while it had work

    def send(self, message) -> None:
        if isinstance(message, Outputs) and self.finished_at is None \
                and any(o.finished for o in message.outputs):
            self.finished_at = time.monotonic()

    def receive(self, wait: float) -> list:
        if not self.started:
            self.started = True
            return [Commands((add("a", 1), add("b", 3)))]
        if 0 < wait < IDLE_WAIT:
            self.holds.append(wait)
        if self.finished_at is not None and not self.sent_c:
            due = self.finished_at + self.late
            if time.monotonic() + wait >= due:
                time.sleep(max(0.0, due - time.monotonic()))
                self.sent_c = True
                return [Commands((add("c", 1),))]
        if wait >= IDLE_WAIT:
            return [Stop()]  # the engine is idle: the scenario is over
        time.sleep(wait)
        return []


def test_the_engine_loop_holds_the_next_step_for_the_replacing_request():
    core, channel = RecordingCore(), LateChannel(late=0.001)
    engine_loop.run(core, channel)
    assert core.steps == [["a", "b"], ["b", "c"], ["b"]]
    assert channel.holds and max(channel.holds) <= LIMIT

    core, channel = RecordingCore(hold_ms=0), LateChannel(late=0.001)  # off: "c" misses a step
    engine_loop.run(core, channel)
    assert core.steps == [["a", "b"], ["b"], ["b", "c"]]


def test_a_hold_that_nothing_fills_ends_at_its_limit():
    core, channel = RecordingCore(), LateChannel(late=0.2)  # comes after the hold
    started = time.monotonic()
    engine_loop.run(core, channel)
    assert core.steps == [["a", "b"], ["b"], ["b", "c"]]
    # three steps and the late arrival's own wait; the hold itself adds at most LIMIT
    assert time.monotonic() - started < 3 * STEP + 0.2 + LIMIT + 0.5


@pytest.mark.parametrize("hold_ms,steps", [
    (EngineConfig.step_hold_ms, [["a", "b"], ["b", "c"], ["b"]]),
    (0, [["a", "b"], ["b"], ["b", "c"]]),  # off: "c" comes while the second step runs
    # (at once, "c" would race the engine thread for the second step: it is submitted 1 ms late)
])
def test_the_thread_engine_holds_the_next_step_for_a_client_that_sends_soon(hold_ms, steps):
    async def closed_loop() -> list[list[str]]:
        core = RecordingCore(hold_ms)
        engine = AsyncEngine(core)
        try:
            a = engine.submit([1], SamplingParams(max_tokens=1), "a")
            b = engine.submit([1], SamplingParams(max_tokens=3), "b")
            async for _ in a:
                pass
            await asyncio.sleep(0.001)  # a client's next request, a millisecond later
            c = engine.submit([1], SamplingParams(max_tokens=1), "c")
            async for _ in c:
                pass
            async for _ in b:
                pass
            return core.steps
        finally:
            await engine.aclose()

    assert asyncio.run(closed_loop()) == steps
