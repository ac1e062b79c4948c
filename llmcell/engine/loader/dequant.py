"""Dequantize GGUF tensors to float32 torch tensors.

Q8_0, Q4_0 and Q4_1 (the formats small models ship in) use vectorized torch code that runs on all
cores; every other type goes through the `gguf` package's reference dequantizer. Tests check the
fast paths against `gguf.quants.dequantize` bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize


def _blocks(raw: np.ndarray, block_bytes: int) -> torch.Tensor:
    return torch.from_numpy(np.array(raw, copy=True).reshape(-1, block_bytes))


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    # ggml layout: values 0..15 are the low nibbles of the 16 bytes, 16..31 the high nibbles
    return torch.cat([qs & 0x0F, qs >> 4], dim=1).float()


def dequantize(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    if qtype == Q.F32:
        return torch.from_numpy(np.array(raw).view(np.float32)).reshape(shape)
    if qtype == Q.Q8_0:
        b = _blocks(raw, 34)
        qs = b[:, 2:].contiguous().view(torch.int8).float()
        return (qs * _f16(b, 0)).reshape(shape)
    if qtype == Q.Q4_0:
        b = _blocks(raw, 18)
        return ((_nibbles(b[:, 2:]) - 8.0) * _f16(b, 0)).reshape(shape)
    if qtype == Q.Q4_1:
        b = _blocks(raw, 20)
        return (_nibbles(b[:, 4:]) * _f16(b, 0) + _f16(b, 2)).reshape(shape)
    arr = np.asarray(gguf_dequantize(raw, qtype), dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)).reshape(shape)
