"""How submitted requests are handed to the engine (`EngineClient`'s side, no engine behind it):
one hand-off per loop turn, bursts at an idle engine held together (a lone request there waits a
little for the rest of a possible burst), nothing held at a busy one."""

from __future__ import annotations

import asyncio

from llmcell.engine import SamplingParams
import pytest

from llmcell.engine.async_engine import EngineClient
from llmcell.engine.holds import HOLD_FRACTION, idle_hold
from llmcell.engine.messages import Commands
from llmcell.engine.stats import EngineStats


def stats(running: int, prefill_seconds: float = 0.0) -> EngineStats:
    return EngineStats(running, 0, 0.0, 10, 10, 0, 0, 0, 0, 0, 0, prefill_seconds)


class Recorder(EngineClient):
    """An engine client whose hand-offs are only recorded."""

    def __init__(self, running: int = 0, prefill_seconds: float = 0.0,
                 hold_limit: float = 0.0) -> None:
        super().__init__(None, 1000, 100, stats(running, prefill_seconds))
        self.hand_off.limit = hold_limit
        self.posted: list[Commands] = []

    def _post(self, message) -> None:
        self.posted.append(message)

    def batches(self) -> list[list[str]]:
        return [[c.request_id for c in cmd.items] for cmd in self.posted]


PARAMS = SamplingParams(max_tokens=4)


def test_a_burst_whose_first_request_came_turns_before_the_rest_is_one_batch():
    async def scenario(running: int) -> list[list[str]]:
        client = Recorder(running)
        client.submit([1, 2], PARAMS, "first")
        await asyncio.sleep(0)  # the loop polls its sockets and starts the tasks they brought:
        await asyncio.sleep(0)  # the rest of the burst is submitted two turns later
        for i in range(4):
            client.submit([1, 2], PARAMS, f"r{i}")
        await asyncio.sleep(0.1)
        return client.batches()

    assert asyncio.run(scenario(0)) == [["first", "r0", "r1", "r2", "r3"]]
    # At a busy engine nothing waits: the first goes at once, the rest together at the next turn.
    assert asyncio.run(scenario(3)) == [["first"], ["r0", "r1", "r2", "r3"]]


def test_a_lone_request_at_an_idle_engine_is_handed_off_within_a_few_turns():
    async def scenario() -> int:
        client = Recorder()
        client.submit([1, 2], PARAMS, "alone")
        turns = 0
        while not client.posted:
            await asyncio.sleep(0)
            turns += 1
        return turns

    assert asyncio.run(scenario()) <= 4


def test_the_idle_hold_is_a_fraction_of_the_last_prefill_step_capped():
    assert idle_hold(stats(0, 0.2), 0.010) == pytest.approx(HOLD_FRACTION * 0.2)
    assert idle_hold(stats(0, 5.0), 0.010) == 0.010  # capped by step_hold_ms
    assert idle_hold(stats(0, 0.0), 0.010) == 0.0  # no prefill yet: nothing to scale it by
    assert idle_hold(stats(0, 0.2), 0.0) == 0.0  # step_hold_ms=0 turns it off


def test_a_burst_on_new_connections_whose_second_request_comes_ms_later_is_one_batch():
    """A server that accepts a burst's new connections one after another reads its requests a
    millisecond or two apart, far more than a few turns of its loop: the idle hold (here 2% of a
    250 ms prefill = 5 ms) keeps the first one for them; with the hold off it goes alone."""
    async def scenario(hold_limit: float) -> list[list[str]]:
        client = Recorder(prefill_seconds=0.25, hold_limit=hold_limit)
        client.submit([1, 2], PARAMS, "first")
        for _ in range(10):  # many turns pass while the next connection is accepted
            await asyncio.sleep(0)
        for i in range(3):
            client.submit([1, 2], PARAMS, f"r{i}")
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        return client.batches()

    assert asyncio.run(scenario(0.010)) == [["first", "r0", "r1", "r2"]]
    # (the engine's stats here never leave idle, so the rest are then held as a burst of their own)
    assert asyncio.run(scenario(0.0)) == [["first"], ["r0", "r1", "r2"]]


def test_a_lone_request_is_held_no_longer_than_the_idle_hold_and_not_at_a_busy_engine():
    async def handed_off_after(running: int) -> tuple[float, int]:
        client = Recorder(running, prefill_seconds=0.25, hold_limit=0.010)
        loop = asyncio.get_running_loop()
        start = loop.time()
        client.submit([1, 2], PARAMS, "alone")
        turns = 0
        while not client.posted:
            await asyncio.sleep(0)
            turns += 1
        return loop.time() - start, turns

    waited, _ = asyncio.run(handed_off_after(0))
    assert 0.004 <= waited < 1.0  # about 5 ms; the upper bound only catches a hang
    waited, turns = asyncio.run(handed_off_after(2))
    assert turns <= 1
