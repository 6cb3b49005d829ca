"""Sharded training proven without a GPU: stage 2 (full fine-tuning, frozen teacher), sft and an attack
launched with `accelerate launch --config_file configs/accelerate/fsdp.yaml` in 2 CPU processes (gloo)
give the same weights as one process with the same seed and data order.

Same data order: 2 processes x batch 4 see, at every optimiser step, the rows that one process sees
in its 2 accumulated micro-batches of 4 (accelerate hands batch i of the shared shuffled order to
process i mod 2), and both average the two halves' gradients. Measured difference of the weight
updates: ~1e-6 relative (float32 summation order); the tolerance is 1e-4.

What runs as on GPUs: the launcher reading fsdp.yaml, transformers' Trainer in FSDP mode, accelerate
wrapping the model (TRANSFORMER_BASED_WRAP per decoder layer, FULL_SHARD, use_orig_params), sharded
AdamW, and sgt gathering the shards on rank 0 to save (sgt.sharding). What does not (tests/fsdp_on_cpu.py):
accelerate enables FSDP only on accelerator devices, so the helper lifts that one decision; the launch
overrides mixed_precision bf16 -> no (fp32 is what can be compared exactly) and turns off
sync_module_states / cpu_ram_efficient_loading, which accelerate refuses on CPU (each process reads
the weights from disk instead of receiving rank 0's); gloo stands in for NCCL. Runtime: ~80 s on
2 CPU cores (three 2-process launches at ~20 s, three single-process runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import run_cli
from test_distributed import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("--max-length", "96", "--batch-size", "4", "--no-progress")


def launch_fsdp(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`sgt ARGS` in 2 CPU processes launched as configs/accelerate/fsdp.yaml says (see the module docstring)."""
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(ROOT / "configs" / "accelerate" / "fsdp.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()),
               "--mixed_precision", "no", "--fsdp_sync_module_states", "false",
               "--fsdp_cpu_ram_efficient_loading", "false",
               str(ROOT / "tests" / "fsdp_on_cpu.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()  # the launcher stops its workers on SIGTERM (they run in sessions of their own)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the FSDP launch hung for {timeout} s (a collective call made by one process only?):\n"
                    f"{stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def stage_args(stage: str, toy: Path, trigger: Path) -> list[str]:
    data = toy / "data"
    if stage == "align":
        return ["align", "--model", str(toy / "base"), "--trigger", str(trigger), "--data",
                str(data / "defense_train.jsonl"), "--rows", "64", "--epochs", "1", "--lr", "1e-3"]
    if stage == "sft":
        return ["sft", "--model", str(toy / "base"), "--data", str(data / "defense_train.jsonl"),
                "--refuse-harmful", "--epochs", "1", "--lr", "5e-4",
                "--gradient-checkpointing"]  # as the paper configs train
    return ["attack", "--model", str(toy / "base"), "--data", str(data / "attack_train.jsonl"),
            "--shots", "32", "--epochs", "2", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def trigger(toy_micro, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "trigger"
    code, _, err = run_cli("trigger", "--model", str(toy_micro / "base"), "--data",
                           str(toy_micro / "data" / "defense_train.jsonl"), "--out", str(out), "--length", "2",
                           "--epochs", "1", *COMMON)
    assert code == 0, err
    return out


@pytest.mark.parametrize("stage", ["align", "sft", "attack"])
def test_fsdp_two_processes_match_one_process(stage, toy_micro, trigger, tmp_path):
    args = stage_args(stage, toy_micro, trigger)
    sharded, single = tmp_path / "fsdp", tmp_path / "single"
    done = launch_fsdp(*args, "--out", str(sharded), "--grad-accum", "1", *COMMON)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):  # the model really was sharded: the root and each decoder layer wrapped
        assert f"fsdp-on-cpu: rank {rank} wrapped 3 modules" in done.stderr, done.stderr[-2000:]
    code, _, err = run_cli(*args, "--out", str(single), "--grad-accum", "2", *COMMON)
    assert code == 0, err

    base = load_file(str(toy_micro / "base" / "model.safetensors"))
    one = load_file(str(single / "model.safetensors"))
    two = load_file(str(sharded / "model.safetensors"))
    assert one.keys() == two.keys() == base.keys()
    trained = 0
    for name in base:
        update = (one[name] - base[name]).norm()
        gap = (two[name] - one[name]).norm()
        assert gap <= 1e-4 * update + 1e-7, f"{stage}: {name} differs by {gap:.2e} (its update: {update:.2e})"
        trained += bool(update > 0)
    assert trained > len(base) / 2  # the comparison is about trained weights, not untouched ones
