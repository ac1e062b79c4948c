"""Load-time check that this machine's reduced-precision kernels compute what they should.

A CPU's bf16 kernels can be wrong for some shapes while fp32 on the same machine is right (oneDNN's
AMX bf16 matmul has had such bugs, and a virtual machine that announces AMX without supporting
its tile state corrupts it). A model that answers in nonsense is worse than one that is slower, so
before a bf16 or fp16 model serves, the engine runs the model's own layers (one of each weight
shape, and the LM head) and its attention at a few batch sizes, and compares each with fp32 on the
same rounded inputs. A relative error far above the dtype's rounding (2^-8 for bf16) names a broken
path; the engine core decides what to do about it (`EngineCore._checked_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOLERANCE = 0.02
"""Largest relative error (Frobenius norm) accepted; a correct bf16 result is at ~0.002."""
ROWS = (1, 7, 37, 128)
"""Batch sizes (tokens in a step) probed: one decode, a partial tile, the chat prompt that exposed
the AMX defect, and a full prefill chunk."""
HEAD_ROWS = (1, 37)
REFERENCE_COLUMNS = 4096
"""Outputs compared per projection: enough to see a wrong tile, without an fp32 copy of the head."""


@dataclass(frozen=True)
class Problem:
    what: str
    rows: int
    error: float

    def __str__(self) -> str:
        return (f"{self.what} with {self.rows} rows is off by {self.error:.3f} (relative; a "
                f"correct result is under {TOLERANCE})")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.float() - want).norm().item()
    scale = want.norm().item()
    return float("inf") if diff != diff else diff / max(scale, 1e-30)


def _inputs(rows: int, cols: int, dtype: torch.dtype, device: torch.device,
            gen: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen).to(device=device, dtype=dtype)


def check_linear(name: str, layer, in_features: int, dtype: torch.dtype, device: torch.device,
                 rows: tuple[int, ...], gen: torch.Generator) -> Problem | None:
    """`layer(x)` against x @ W^T in fp32 (W as the layer holds it, dequantized if need be), on
    the first `REFERENCE_COLUMNS` outputs (the layer itself runs whole, at its own shape)."""
    n = min(layer.weight.shape[0], REFERENCE_COLUMNS)
    for m in rows:
        x = _inputs(m, in_features, dtype, device, gen)
        want = x.float() @ layer.reference_weight(m, n).T
        if layer.bias is not None:
            want = want + layer.bias[:n].float()
        err = relative_error(layer(x)[:, :n], want)
        if not err <= TOLERANCE:
            shape = "x".join(map(str, layer.weight.shape))
            return Problem(f"{name} ({shape})", m, err)
    return None


def check_attention(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                    device: torch.device, rows: tuple[int, ...],
                    gen: torch.Generator) -> Problem | None:
    """Causal SDPA on q/k/v laid out as the model's fused projection leaves them (row stride of
    the whole qkv row), against fp32."""
    width = (heads + 2 * kv_heads) * head_dim
    for m in rows:
        qkv = _inputs(m, width, dtype, device, gen)
        q = qkv[:, : heads * head_dim].view(m, heads, head_dim)
        k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(m, kv_heads, head_dim)
        v = qkv[:, (heads + kv_heads) * head_dim :].view(m, kv_heads, head_dim)

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(
                q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
                v.transpose(0, 1).unsqueeze(0), is_causal=True, scale=head_dim ** -0.5,
                enable_gqa=heads != kv_heads)

        err = relative_error(sdpa(q, k, v), sdpa(q.float(), k.float(), v.float()))
        if not err <= TOLERANCE:
            return Problem(f"causal attention ({heads}/{kv_heads} heads of {head_dim})", m, err)
    return None


@torch.inference_mode()
def check_model(model, rows: tuple[int, ...] = ROWS) -> Problem | None:
    """The first problem found in `model`'s reduced-precision path, or None. fp32 is not checked."""
    if model.dtype == torch.float32:
        return None
    gen = torch.Generator().manual_seed(0)
    c, layer = model.config, model.layers[0]
    dtype, device = model.dtype, model.device
    checks = [("qkv projection", layer.qkv, c.hidden_size, rows),
              ("output projection", layer.o, layer.o.weight.shape[1], rows),
              ("gate/up projection", layer.gate_up, c.hidden_size, rows),
              ("down projection", layer.down, layer.down.weight.shape[1], rows),
              ("LM head", model.lm_head, c.hidden_size, HEAD_ROWS)]
    for name, lin, cols, probe_rows in checks:
        problem = check_linear(name, lin, cols, dtype, device, probe_rows, gen)
        if problem is not None:
            return problem
    return check_attention(c.num_heads, c.num_kv_heads, c.head_dim, dtype, device, rows, gen)
