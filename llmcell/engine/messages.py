"""The contract between an engine client (the server's event loop) and the engine core (a thread
or a process of its own): what each side sends, as typed messages, and the one framing that
carries them over the process pipe.

    client -> core   Configure (first, to a process)   Commands [AddRequest | AbortRequest ...]
                     Stop
    core -> client   Ready | Failed   once, after loading (from a process)
                     Outputs          after each step or command batch: outputs, the engine's
                                      stats, the adds the core refused, and the prefix-cache
                                      keys stored and evicted since the last one
                     Dead             a step raised; the core has stopped

The engine loop (engine/loop.py) reads `Commands` and `Stop` and writes `Outputs` and `Dead`
whichever transport carries them; `Configure`, `Ready` and `Failed` belong to the process
transport's start-up (engine/process.py). Frames are a 4-byte length and a pickle: both ends are
this package, started together from one interpreter.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from llmcell.config.engine import EngineConfig
from llmcell.engine.outputs import RequestOutput, Resume
from llmcell.protocol.lora import AdapterRef
from llmcell.protocol.sampling import SamplingParams
from llmcell.engine.stats import EngineStats

if TYPE_CHECKING:
    from llmcell.tokenizer.tokenizer import Tokenizer


# ---- client -> core ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: float
    """`time.monotonic()` when the client submitted it (queueing time is measured from it)."""
    resume: Resume | None = None
    adapter: AdapterRef | None = None
    """The LoRA adapter it runs with (None: the base model)."""


@dataclass(frozen=True, slots=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True, slots=True)
class Commands:
    """What the client handed off in one go: a burst's adds, and aborts, in order."""

    items: tuple[AddRequest | AbortRequest, ...]

    @property
    def num_adds(self) -> int:
        return sum(isinstance(item, AddRequest) for item in self.items)


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish now: the client is closing."""


@dataclass(frozen=True, slots=True)
class Configure:
    """The first message to an engine process: what to load, and at what CPU priority."""

    config: EngineConfig
    nice: int = 0
    idle: bool = False


ToCore = Union[Commands, Stop, Configure]


# ---- core -> client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineInfo:
    """What the client needs of the loaded engine: to tokenize, and to check requests up front."""

    tokenizer: "Tokenizer"
    max_model_len: int
    vocab_size: int
    load_seconds: float
    stats: EngineStats


@dataclass(frozen=True, slots=True)
class Ready:
    info: EngineInfo


@dataclass(frozen=True, slots=True)
class Failed:
    """Loading failed: `kind` is the exception's class name (ValueError: bad model or config)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class RequestError:
    """An add the core refused (ValueError from `add_request`)."""

    request_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Outputs:
    outputs: list[RequestOutput]
    stats: EngineStats
    errors: tuple[RequestError, ...] = ()
    kv_events: list[tuple[bool, int]] | None = None
    """(stored?, key) changes of the prefix cache, oldest first (engine/kv_cache/event_log.py)."""


@dataclass(frozen=True, slots=True)
class Dead:
    message: str


ToClient = Union[Ready, Failed, Outputs, Dead]


def count_adds(messages: list) -> int:
    """New requests among messages to the core."""
    return sum(m.num_adds for m in messages if isinstance(m, Commands))


# ---- framing ----------------------------------------------------------------------------------
_HEADER = struct.Struct("!I")


def frame(message: ToCore | ToClient) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list:
        self._buffer += data
        messages, view, at = [], self._buffer, 0
        while len(view) - at >= _HEADER.size:
            (size,) = _HEADER.unpack_from(view, at)
            if len(view) - at - _HEADER.size < size:
                break
            start = at + _HEADER.size
            messages.append(pickle.loads(view[start:start + size]))
            at = start + size
        del self._buffer[:at]
        return messages
