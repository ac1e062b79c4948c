"""The engine loop: the one place where the engine core takes commands and steps, whichever
transport carries its messages (a thread of the server's process, engine/async_engine.py, or a
process of its own, engine/process.py).

Each turn: take the commands that have come (waiting for them only when there is nothing to do),
apply them, run one step, send the step's outputs with the engine's stats, and, after a step that
finished requests, hold the next one briefly for the requests that replace them (`refill_hold`,
engine/holds.py). If applying or stepping raises, it sends `Dead` and returns: every request in
flight then fails with that error.
"""

from __future__ import annotations

import time
from typing import Protocol

from llmcell.engine.holds import refill_hold
from llmcell.engine.messages import (AddRequest, Commands, Dead, Outputs, RequestError, Stop,
                                     ToClient, ToCore, count_adds)
from llmcell.engine.outputs import RequestOutput

IDLE_WAIT = 0.5
"""Seconds an idle loop waits for a command before it looks again."""


class Channel(Protocol):
    """The core's end of a transport."""

    def receive(self, wait: float) -> list[ToCore] | None:
        """The messages that have come, waiting up to `wait` seconds for the first (none: do not
        wait); None when the client has gone."""

    def send(self, message: ToClient) -> None: ...


def apply(core, commands: Commands, errors: list[RequestError]) -> list[RequestOutput]:
    """Apply a client's adds and aborts to `core`; returns the final outputs of aborted requests
    and appends to `errors` the adds the core refused."""
    outputs: list[RequestOutput] = []
    for item in commands.items:
        if isinstance(item, AddRequest):
            try:
                core.add_request(item.request_id, item.prompt_token_ids, item.params, item.arrival,
                                 item.resume, item.adapter)
            except ValueError as e:
                errors.append(RequestError(item.request_id, str(e)))
        elif (out := core.abort(item.request_id)) is not None:
            outputs.append(out)
    return outputs


def run(core, channel: Channel) -> None:
    """Serve `core` over `channel` until a `Stop` comes, the client goes away, or the core fails."""
    held: list[ToCore] = []  # commands that came during a refill hold
    core.block_manager.record_events()
    while True:
        messages = channel.receive(0.0 if core.has_work() or held else IDLE_WAIT)
        if messages is None:
            return
        messages, held = held + messages, []
        outputs: list[RequestOutput] = []
        errors: list[RequestError] = []
        finished, took = 0, 0.0
        try:
            for message in messages:
                if isinstance(message, Stop):
                    return
                if isinstance(message, Commands):
                    outputs += apply(core, message, errors)
            if core.has_work():
                started = time.monotonic()
                stepped = core.step()
                took = time.monotonic() - started
                finished = sum(out.finished for out in stepped)
                outputs += stepped
                errors += [RequestError(rid, reason) for rid, reason in core.take_refused()]
        except Exception as e:  # a failed step must not leave callers waiting forever
            channel.send(Dead(f"engine step failed: {e!r}"))
            return
        if outputs or messages:
            channel.send(Outputs(outputs, core.stats(), tuple(errors),
                                 core.block_manager.drain_events()))
        hold = refill_hold(finished, took, core.stats(), core.config.step_hold_ms / 1e3) \
            if core.has_work() else 0.0
        until = time.monotonic() + hold
        while count_adds(held) < finished and (left := until - time.monotonic()) > 0:
            got = channel.receive(left)
            if got is None:
                return
            held += got
            if any(isinstance(m, Stop) for m in got):
                break
