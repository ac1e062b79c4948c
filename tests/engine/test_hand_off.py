"""How submitted requests are handed to the engine (`EngineClient`'s side, no engine behind it):
one hand-off per loop turn, bursts at an idle engine held together, nothing held at a busy one."""

from __future__ import annotations

import asyncio

from llmcell.engine import SamplingParams
from llmcell.engine.async_engine import EngineClient
from llmcell.engine.stats import EngineStats


def stats(running: int) -> EngineStats:
    return EngineStats(running, 0, 0.0, 10, 10, 0, 0, 0, 0, 0, 0)


class Recorder(EngineClient):
    """An engine client whose hand-offs are only recorded."""

    def __init__(self, running: int = 0) -> None:
        super().__init__(None, 1000, 100, stats(running))
        self.posted: list[tuple] = []

    def _post(self, cmd: tuple) -> None:
        self.posted.append(cmd)

    def batches(self) -> list[list[str]]:
        return [[c[1] for c in cmd[1]] for cmd in self.posted if cmd[0] == "batch"]


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
