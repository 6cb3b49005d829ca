"""Test helper: run `sgt ARGS` in a process started by `accelerate launch` with an FSDP config, on CPU.

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 ... tests/fsdp_on_cpu.py sgt-args

accelerate 1.16 turns FSDP on only for accelerator devices: on CPU processes it forms a gloo data-parallel
group and silently drops the FSDP settings the launcher passed (AcceleratorState keeps FSDP for
MULTI_GPU-like types only). This script changes exactly that decision - once accelerate has built the
FSDP plugin from the launch config and set up the gloo group, the distributed type becomes FSDP - and
names the CPU `cpu` rather than `cpu:0` (FSDP compares it with the parameters' device). Everything after
that is the code a GPU launch runs: transformers' Trainer sees FSDP, accelerate wraps the model with
the config's auto-wrap policy, sharding strategy and use_orig_params, and sgt gathers the shards to save.
Each FSDP wrap is reported on stderr (`fsdp-on-cpu: rank R wrapped N modules`) so that a test can check
that the model really was sharded.
"""

from __future__ import annotations

import atexit
import os
import sys

import accelerate.state as accelerate_state
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FullyShardedDataParallel

_accelerator_state_init = accelerate_state.AcceleratorState.__init__
_fsdp_init = FullyShardedDataParallel.__init__
_wrapped: list[str] = []


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        shared = accelerate_state.PartialState._shared_state
        shared["distributed_type"] = DistributedType.FSDP
        self.device = shared["device"] = torch.device("cpu")


def _recording_fsdp_init(self, module, *args, **kwargs):
    _wrapped.append(type(module).__name__)
    _fsdp_init(self, module, *args, **kwargs)


def _report() -> None:
    if _wrapped:
        sys.stderr.write(f"fsdp-on-cpu: rank {os.environ.get('RANK')} wrapped {len(_wrapped)} modules: "
                         f"{', '.join(sorted(set(_wrapped)))}\n")


accelerate_state.AcceleratorState.__init__ = _fsdp_on_cpu
FullyShardedDataParallel.__init__ = _recording_fsdp_init
atexit.register(_report)

if __name__ == "__main__":
    from sgt.cli import main

    code = main(sys.argv[1:])
    _report()
    atexit.unregister(_report)
    raise SystemExit(code)
