"""benchmarks/gpu_study.sh on a machine without a CUDA GPU: one line saying why it skipped, exit code 0,
nothing written (CI and laptops run it safely; on a GPU it runs the study, which is not a unit test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the script would run the study")
def test_gpu_study_skips_cleanly_without_a_gpu(tmp_path):
    out = tmp_path / "study"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_study.sh"), str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu_study: skipped: no CUDA GPU visible to torch (run it on a GPU machine with the project's "
        "dependencies installed)"]
    assert not out.exists()
