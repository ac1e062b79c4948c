"""Publishing a LoRA adapter (a publish body with `base`): checked against its base model's
shapes from the files' headers, sized by its own parameters, and refused with a 400 naming what
is wrong (the base is not published or is itself an adapter, the directory is not an adapter,
a tensor does not fit the base).
"""

from __future__ import annotations

import asyncio

from llmcell.admin.errors import AdminError
from llmcell.admin.placement import ModelSpec
from llmcell.admin.registry import CellRegistry
from llmcell.engine.lora.peft_dir import check_adapter, read_adapter
from llmcell.engine.loader.model_config import read_model_config
from llmcell.engine.loader.registry import resolve_model_path
from llmcell.protocol.saxml import Publish


def _check(path: str, base_source: str) -> int:
    config = read_model_config(resolve_model_path(base_source))
    info = read_adapter(path) if config is None else check_adapter(path, config)
    return info.num_params


async def adapter_spec(req: Publish, registry: CellRegistry, bytes_per_param: float) -> ModelSpec:
    base = registry.store.get(req.base)
    if base is None:
        raise AdminError(400, f"adapter {req.model}: base model {req.base} is not published "
                              "(publish it first)")
    if base.base is not None:
        raise AdminError(400, f"adapter {req.model}: {req.base} is itself a LoRA adapter (of "
                              f"{base.base}); an adapter's base must be a model")
    if req.model == req.base:
        raise AdminError(400, f"adapter {req.model} cannot be its own base")
    if req.checkpoint != "None":
        raise AdminError(400, f"adapter {req.model}: checkpoint must be None (an adapter's "
                              "weights are its model_path; publish a new version with update)")
    if req.scaling is not None:
        raise AdminError(400, f"adapter {req.model}: autoscaling applies to its base model "
                              f"{req.base}, not to an adapter")
    source = base.model_path if base.checkpoint == "None" else base.checkpoint
    try:
        params = await asyncio.to_thread(_check, req.model_path, source)
    except (ValueError, OSError) as e:
        raise AdminError(400, f"adapter {req.model}: {e}") from None
    return ModelSpec(req.model, req.model_path, req.checkpoint, req.replicas,
                     int(params * bytes_per_param), None, req.base)
