"""LoRA weights as the model applies them: every resident adapter stacked in one pair of matrices
per projection, and a step's rows masked to their own adapter.

An adapter's deltas are laid out per fused projection of the model (qkv, o, gate_up, down): `A`
[W, in] and `B` [out, W] with the scaling folded into `B`, where W is the member modules times
`max_rank` (q, k and v each own `max_rank` columns of qkv's; a lower rank is zero-padded; a module
an adapter does not target is all zeros). The engine keeps `max_loras` such slots side by side
(`LoraStack`), so a step that mixes the base and several adapters adds them all with three
operations per projection, whatever the mix:

    s = x @ A_stack            [rows, slots * W]   every row against every resident adapter
    s *= mask                  each row keeps the columns of its own adapter (none: the base)
    out += s @ B_stack

(the stacks are kept transposed, [in, slots * W] and [slots * W, out], as the matmuls read them).

Small per-adapter matmuls (one pair per adapter per projection) cost more here than the wasted
columns: each is a few rows, and a CPU matmul of a few rows is dominated by its fixed cost
(bench/README.md, multi-LoRA). The cost grows with `max_loras * max_rank`, not with the mix.
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
    """One adapter in slot layout (fp32, on the CPU until installed)."""

    ref: AdapterRef
    layers: tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], ...]
    """Per layer: fused projection -> (A [W, in], B [out, W] scaled), for those it targets."""


def load_lora(ref: AdapterRef, config: ModelConfig, max_rank: int) -> LoraWeights:
    """Read and check the adapter against the base (ValueError naming what does not fit)."""
    info = check_adapter(ref.path, config)
    pairs = lora_pairs(info, config)
    for (layer, module), (a_name, _) in pairs.items():
        rank = info.tensors[a_name][0]
        if rank > max_rank:
            raise ValueError(f"{info.path}: {module} of layer {layer} has rank {rank}, above "
                             f"this engine's max_lora_rank={max_rank}")
    tensors = load_file(str(info.path / "adapter_model.safetensors"))
    shapes = module_shapes(config)
    layers = []
    for layer in range(config.num_layers):
        fused = {}
        for proj, members in FUSED.items():
            if not any((layer, m) in pairs for m in members):
                continue
            in_f = shapes[members[0]][1]
            a_all = torch.zeros(len(members) * max_rank, in_f)
            b_all = torch.zeros(sum(shapes[m][0] for m in members), len(members) * max_rank)
            row = 0
            for j, m in enumerate(members):
                out_f = shapes[m][0]
                if (layer, m) in pairs:
                    a_name, b_name = pairs[(layer, m)]
                    a, b = tensors[a_name].float(), tensors[b_name].float()
                    r, col = a.shape[0], j * max_rank
                    a_all[col:col + r] = a
                    b_all[row:row + out_f, col:col + r] = b * info.scaling(r)
                row += out_f
            fused[proj] = (a_all, b_all)
        layers.append(fused)
    return LoraWeights(ref, tuple(layers))


class LoraStack:
    """`max_loras` adapter slots per projection per layer, in the compute dtype on the device
    (allocated when the first adapter is installed)."""

    def __init__(self, config: ModelConfig, max_loras: int, max_rank: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.config, self.slots, self.rank = config, max_loras, max_rank
        self.dtype, self.device = dtype, device
        self.a: list[dict[str, torch.Tensor]] = []
        self.b: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, set[int]]] = []
        """Per layer and projection, the slots whose adapter targets it (skipped when none)."""

    def width(self, proj: str) -> int:
        return len(FUSED[proj]) * self.rank

    def _allocate(self) -> None:
        shapes = module_shapes(self.config)
        for _ in range(self.config.num_layers):
            a, b = {}, {}
            for proj, members in FUSED.items():
                w = self.slots * self.width(proj)
                a[proj] = torch.zeros(shapes[members[0]][1], w, dtype=self.dtype,
                                      device=self.device)
                b[proj] = torch.zeros(w, sum(shapes[m][0] for m in members), dtype=self.dtype,
                                      device=self.device)
            self.a.append(a)
            self.b.append(b)
            self.targets.append({proj: set() for proj in FUSED})

    def install(self, slot: int, weights: LoraWeights) -> None:
        if not self.a:
            self._allocate()
        for layer, fused in enumerate(weights.layers):
            for proj in FUSED:
                w = self.width(proj)
                cols = slice(slot * w, (slot + 1) * w)
                ab = fused.get(proj)
                if ab is None:
                    self.a[layer][proj][:, cols].zero_()
                    self.b[layer][proj][cols].zero_()
                    self.targets[layer][proj].discard(slot)
                else:
                    self.a[layer][proj][:, cols].copy_(ab[0].t())
                    self.b[layer][proj][cols].copy_(ab[1].t())
                    self.targets[layer][proj].add(slot)

    def remove(self, slot: int) -> None:
        for targets in self.targets:
            for slots in targets.values():
                slots.discard(slot)

    def batch(self, row_slots: list[int]) -> "LoraBatch":
        """The masks of a step whose rows run the adapters in `row_slots` (-1: the base)."""
        rows = torch.tensor(row_slots, device=self.device)
        used = set(row_slots) - {-1}
        masks = {}
        for width in {self.width(p) for p in FUSED}:
            cols = torch.arange(self.slots * width, device=self.device) // width
            masks[width] = (cols.unsqueeze(0) == rows.unsqueeze(1)).to(self.dtype)
        return LoraBatch(self, masks, used)


class LoraBatch:
    """One step's view of the stack: which rows run which adapter."""

    __slots__ = ("stack", "masks", "used")

    def __init__(self, stack: LoraStack, masks: dict[int, torch.Tensor], used: set[int]) -> None:
        self.stack, self.masks, self.used = stack, masks, used

    def apply(self, layer: int, proj: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out` (the base projection of `x`) plus each row's adapter delta."""
        st = self.stack
        if self.used.isdisjoint(st.targets[layer][proj]):
            return out
        s = x @ st.a[layer][proj]
        s.mul_(self.masks[st.width(proj)])
        return out.addmm_(s, st.b[layer][proj])
