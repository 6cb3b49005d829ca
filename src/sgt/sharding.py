"""Training under FSDP (`accelerate launch --config_file configs/accelerate/fsdp.yaml`): giving rank 0 the
whole trained model, as plain data parallel does.

Under DDP every process holds the whole model, so rank 0 saves and evaluates it after training. Under
FSDP each process holds one shard: the unwrapped module's parameters are views of that shard, and
reading its state_dict is a collective call that every process must make (rank 0 alone would wait
forever). So a stage trained under FSDP
  1. remembers the module tree without its weights (on the meta device) before the Trainer shards it
     (`remember_structure`, called by `sgt.training.train_rows`), and
  2. after training, gathers the full weights - every process takes part, rank 0 receives them - and
     loads them into a copy of that tree (`full_model`): rank 0 then saves and evaluates a plain
     module, exactly as under DDP. Tied weights stay tied; buffers keep their values.
Without FSDP both calls change nothing.
"""

from __future__ import annotations

import copy
import os
import weakref

import torch
from torch import nn

# the weightless copy of each module that is trained under FSDP, looked up by the module itself
_STRUCTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fsdp_launch() -> bool:
    """Whether this process was started by `accelerate launch` with an FSDP config (any process count)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def weightless_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters live on the meta device (no memory); buffers are copied
    with their values (they are small, and FSDP does not shard them). A parameter shared by two modules
    (tied embeddings) stays one shared parameter."""
    meta = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo=meta)


def remember_structure(model: nn.Module) -> None:
    """Before sharding: keep `model`'s weightless copy for `full_model` (only under an FSDP launch)."""
    if fsdp_launch():
        _STRUCTURES[model] = weightless_copy(model)


def full_model(wrapped: nn.Module, device: torch.device | str = "cpu"):
    """The trained model as one plain module on rank 0 (on `device`). Under FSDP every process must call
    this (the weights are gathered); the other processes get `wrapped` back and must not use it for
    anything but training. Without FSDP it returns `wrapped` itself."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(wrapped)
    structure = _STRUCTURES.get(inner)
    if structure is None or not _is_fsdp(wrapped):
        return wrapped
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # Every process sends its shards. On GPUs rank 0 alone receives them, in CPU memory; on CPU
    # processes every process receives them (FSDP's offload of CPU tensors to the CPU crashes).
    on_gpu = next(wrapped.parameters()).device.type != "cpu"
    state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=on_gpu))
    if int(os.environ.get("RANK", "0")) != 0:
        return wrapped
    model = _materialize(copy.deepcopy(structure), device)
    model.load_state_dict(state, strict=True)
    return model


def _is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(module, (FullyShardedDataParallel, FSDPModule))


def _materialize(structure: nn.Module, device) -> nn.Module:
    """Give every meta parameter real (uninitialised) memory on `device`, one tensor per shared parameter."""
    made: dict[int, nn.Parameter] = {}
    for module in structure.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_meta:
                if id(param) not in made:
                    made[id(param)] = nn.Parameter(torch.empty_like(param, device=device),
                                                   requires_grad=param.requires_grad)
                module._parameters[name] = made[id(param)]
    return structure.to(device)  # the buffers
