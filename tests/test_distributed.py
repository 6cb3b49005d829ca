"""Training stages in a 2-process world: `torchrun --nproc_per_node 2` gives accelerate a gloo
process group on CPU, as `accelerate launch` gives it NCCL on GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from sgt.models import load_model

pytestmark = pytest.mark.slow  # every test here trains or launches processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "sgt.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_process_trigger_and_alignment(toy_micro, tmp_path):
    data = str(toy_micro / "data" / "defense_train.jsonl")
    trigger = tmp_path / "trigger"
    done = torchrun("trigger", "--model", str(toy_micro / "base"), "--data", data, "--out", str(trigger),
                    "--length", "2", "--epochs", "1", "--batch-size", "8", "--max-length", "96", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((trigger / "metrics.json").read_text())["rows"]
    # each process sees half of the data: steps = rows / (batch x 2 processes)
    assert json.loads((trigger / "metrics.json").read_text())["steps"] == -(-rows // 16)

    aligned = tmp_path / "aligned"
    done = torchrun("align", "--model", str(toy_micro / "base"), "--trigger", str(trigger), "--data", data,
                    "--out", str(aligned), "--rows", "64", "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
                    "--max-length", "96", "--lr", "1e-3", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"steps"') == 1  # only rank 0 reports
    metrics = json.loads((aligned / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["rows"] == 64
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    trained = load_model(str(aligned), "float32").state_dict()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    assert not aligned.with_name("aligned.partial").exists()
