"""LoRA weights as the model applies them, and a step's rows grouped by adapter.

An adapter's deltas are laid out per fused projection of the model (qkv, o, gate_up, down): one
`A` [R, in] and one `B` [out, R] with the scaling folded into `B`. For the fused projections, the
member modules' `A`s are stacked and their `B`s placed block-diagonally, so a fused projection
takes two matmuls per adapter whatever the modules it targets.

A step mixes rows of the base and of several adapters. `LoraBatch` groups the rows by adapter
(segmented: one gather, two small matmuls and one scatter-add per adapter per projection; the
whole batch without gathering when it is all one adapter). A gathered per-row matmul (each row
its own `A`, as Punica's BGMV) would copy [rows, R, in] weights per projection; the segmented form
reads each adapter's weights once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from llmcell.engine.lora.peft_dir import check_adapter, lora_pairs, module_shapes
from llmcell.engine.models.config import ModelConfig
from llmcell.protocol.lora import AdapterRef

FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
         "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}


@dataclass(frozen=True)
class LoraWeights:
    ref: AdapterRef
    layers: tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], ...]
    """Per layer: fused projection -> (A [R, in], B [out, R] scaled), for those it targets."""
    nbytes: int


def load_lora(ref: AdapterRef, config: ModelConfig, dtype: torch.dtype,
              device: torch.device) -> LoraWeights:
    """Read and check the adapter against the base (ValueError naming what does not fit)."""
    info = check_adapter(ref.path, config)
    pairs = lora_pairs(info, config)
    tensors = load_file(str(info.path / "adapter_model.safetensors"))
    shapes = module_shapes(config)
    layers = []
    nbytes = 0
    for layer in range(config.num_layers):
        fused = {}
        for proj, members in FUSED.items():
            present = [m for m in members if (layer, m) in pairs]
            if not present:
                continue
            a_parts, b_blocks = [], []
            out_total = sum(shapes[m][0] for m in members)
            for m in present:
                a_name, b_name = pairs[(layer, m)]
                a, b = tensors[a_name].float(), tensors[b_name].float()
                a_parts.append(a)
                b_blocks.append((m, b * info.scaling(a.shape[0])))
            rank = sum(a.shape[0] for a in a_parts)
            big_b = torch.zeros(out_total, rank)
            col = 0
            for m, b in b_blocks:
                start = sum(shapes[x][0] for x in members[:members.index(m)])
                big_b[start:start + b.shape[0], col:col + b.shape[1]] = b
                col += b.shape[1]
            a_all = torch.cat(a_parts).to(device=device, dtype=dtype).contiguous()
            b_all = big_b.to(device=device, dtype=dtype).contiguous()
            nbytes += a_all.numel() * a_all.element_size() + b_all.numel() * b_all.element_size()
            fused[proj] = (a_all, b_all)
        layers.append(fused)
    return LoraWeights(ref, tuple(layers), nbytes)


class LoraBatch:
    """The rows of one step that run an adapter, grouped by adapter."""

    __slots__ = ("groups",)

    def __init__(self, groups: list[tuple[LoraWeights, torch.Tensor | None]]) -> None:
        self.groups = groups
        """(adapter, row indices or None for every row)."""

    @classmethod
    def from_rows(cls, adapters: list[LoraWeights | None], counts: list[int],
                  device: torch.device) -> "LoraBatch | None":
        """`adapters[j]` runs the next `counts[j]` rows (None: the base); None when no row runs
        an adapter."""
        rows: dict[int, tuple[LoraWeights, list[range]]] = {}
        at = 0
        for w, n in zip(adapters, counts):
            if w is not None:
                rows.setdefault(id(w), (w, []))[1].append(range(at, at + n))
            at += n
        if not rows:
            return None
        groups = []
        for w, ranges in rows.values():
            if len(rows) == 1 and sum(len(r) for r in ranges) == at:
                groups.append((w, None))
                continue
            idx = torch.tensor([i for r in ranges for i in r], dtype=torch.long, device=device)
            groups.append((w, idx))
        return cls(groups)

    def apply(self, layer: int, proj: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out` (the base projection of `x`) plus each adapter's delta on its rows."""
        for w, idx in self.groups:
            ab = w.layers[layer].get(proj)
            if ab is None:
                continue
            a, b = ab
            if idx is None:
                out.addmm_(x @ a.t(), b.t())
            else:
                out.index_add_(0, idx, (x.index_select(0, idx) @ a.t()) @ b.t())
        return out
