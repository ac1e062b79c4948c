"""Linear layers: plain weights in the compute dtype, or int8 weight-only with per-channel scales.

int8 keeps one symmetric scale per output row (absmax / 127) and multiplies with activations in
the compute dtype through `torch._weight_int8pack_mm` when this torch build has it for the device,
else by dequantizing on the fly. That kernel reads a quarter of fp32's bytes, which is what a
decode step of a few rows is bound by, but its cost grows with the rows, so past a few rows the
dense matmul wins (figures in bench/README.md). "int8_dense" keeps a dense copy in the compute
dtype beside the int8 weight and uses it for steps of `DENSE_MIN_ROWS` rows or more: the fast path
at every batch size, for 1 + 2 (bf16) bytes per parameter instead of 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


DENSE_MIN_ROWS = 8
"""Rows from which "int8_dense" multiplies with its dense copy (the measured crossover)."""
INT8_KINDS = ("int8", "int8_dense")


class Linear:
    """y = x @ W^T (+ b). Holds a float weight, or an int8 weight + per-row scales (and, for
    "int8_dense", a dense copy for large steps)."""

    __slots__ = ("weight", "scales", "bias", "dense", "_int8_kernel")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 device: torch.device, quantization: str | None) -> None:
        self.bias = None if bias is None else bias.to(device=device, dtype=dtype)
        self.dense = None
        if quantization in INT8_KINDS:
            w = weight.float()
            scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
            self.weight = q.to(device).contiguous()
            self.scales = scales.to(device=device, dtype=dtype)
            self._int8_kernel = _has_int8_kernel(device, dtype)
            if quantization == "int8_dense":
                self.dense = weight.to(device=device, dtype=dtype).contiguous()
        else:
            self.weight = weight.to(device=device, dtype=dtype).contiguous()
            self.scales = None
            self._int8_kernel = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scales is None:
            return F.linear(x, self.weight, self.bias)
        if self.dense is not None and x.shape[0] >= DENSE_MIN_ROWS:
            return F.linear(x, self.dense, self.bias)
        if self._int8_kernel:
            y = torch._weight_int8pack_mm(x.contiguous(), self.weight, self.scales)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales
        return y if self.bias is None else y + self.bias

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def nbytes(self) -> int:
        n = self.weight.numel() * self.weight.element_size()
        if self.scales is not None:
            n += self.scales.numel() * self.scales.element_size()
        if self.dense is not None:
            n += self.dense.numel() * self.dense.element_size()
        return n

    def reference_weight(self, rows: int, columns: int) -> torch.Tensor:
        """The first `columns` output rows of the weight a step of `rows` rows multiplies by, in
        fp32 (the int8 weight dequantized, or the dense copy): what the kernel check compares."""
        if self.scales is None or (self.dense is not None and rows >= DENSE_MIN_ROWS):
            return (self.weight if self.scales is None else self.dense)[:columns].float()
        return self.weight[:columns].float() * self.scales[:columns].float()[:, None]


def _has_int8_kernel(device: torch.device, dtype: torch.dtype) -> bool:
    if not hasattr(torch, "_weight_int8pack_mm"):
        return False
    try:
        x = torch.ones(1, 32, device=device, dtype=dtype)
        w = torch.ones(8, 32, device=device, dtype=torch.int8)
        s = torch.ones(8, device=device, dtype=dtype)
        torch._weight_int8pack_mm(x, w, s)
        return True
    except (RuntimeError, NotImplementedError):
        return False
