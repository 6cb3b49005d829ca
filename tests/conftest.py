"""Shared fixtures: the `micro` toy world (built once, cached across runs) and tiny random models.

Everything is offline and CPU-only. The toy cache lives in `.cache/tests` at the repo root
(override with SGT_TEST_CACHE); a clean clone builds it once per test session (~30-60 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SGT_TEST_CACHE", ROOT / ".cache" / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(scope="session")
def toy_micro() -> Path:
    """A built `micro` toy world (data/, tasks/, base/); do not modify it in tests."""
    from sgt.worlds.toy import build_toy_world

    out = CACHE / "toy-micro-seed0"
    build_toy_world(out, "micro", seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def toy_tokenizer(toy_micro):
    from sgt.models import load_tokenizer

    return load_tokenizer(str(toy_micro / "base"))


def make_tiny_model(tokenizer, layers: int = 2, hidden: int = 32, seed: int = 0):
    """A random tiny Llama over the toy tokenizer (for tests of mechanics, not quality)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture()
def tiny_model(toy_tokenizer):
    return make_tiny_model(toy_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A saved random tiny model + the toy tokenizer (a local Hugging Face folder)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model = make_tiny_model(toy_tokenizer)
    model.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    return folder


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `sgt ARGS` in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from sgt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
