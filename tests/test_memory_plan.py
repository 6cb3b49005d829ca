"""The memory plan of `sgt run --dry-run`: its parameter, gradient and AdamW bytes equal the real tensors
of a micro model after one real optimiser step; the paper config gets a plan and a GPU count offline."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from sgt.memory_plan import KNOWN_SHAPES, Launch, ModelShape, Stage, model_shape, stage_memory

ONE = Launch("one process")


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def one_adamw_step(model, tokenizer) -> torch.optim.AdamW:
    """A real optimiser step on one small batch; returns the optimiser (its states now exist)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.tensor([tokenizer("User: hello\nAssistant: hi")["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return optimizer


def adamw_state_bytes(optimizer) -> int:
    return tensor_bytes(v for state in optimizer.state.values() for k, v in state.items() if k != "step")


def finetune_stage(dtype: str, **fields) -> Stage:
    from sgt.methods.finetune import FinetuneConfig

    return Stage("sft", FinetuneConfig(model="m", dtype=dtype, batch_size=2, max_length=32, **fields))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_full_finetuning_bytes_equal_the_real_tensors(toy_micro, toy_tokenizer, dtype):
    from sgt.models import load_model

    shape = model_shape(str(toy_micro / "base"))
    planned = stage_memory(shape, finetune_stage(dtype), ONE)
    model = load_model(str(toy_micro / "base"), dtype)
    assert planned["weights"] == tensor_bytes(model.parameters())  # tied embeddings counted once
    optimizer = one_adamw_step(model, toy_tokenizer)
    assert planned["gradients"] == tensor_bytes(p.grad for p in model.parameters())
    assert planned["adamw"] == adamw_state_bytes(optimizer)


def test_lora_bytes_equal_the_real_adapters(toy_micro, toy_tokenizer):
    from sgt.methods.finetune import FinetuneConfig
    from sgt.models import load_model
    from sgt.training import apply_lora

    shape = model_shape(str(toy_micro / "base"))
    stage = finetune_stage("bfloat16", lora=True, lora_r=4)
    planned = stage_memory(shape, stage, ONE)
    model = apply_lora(load_model(str(toy_micro / "base"), "bfloat16"), FinetuneConfig(model="m", lora=True, lora_r=4))
    assert planned["weights"] == tensor_bytes(model.parameters())  # bf16 base + float32 adapters
    optimizer = one_adamw_step(model, toy_tokenizer)
    assert planned["gradients"] == tensor_bytes(p.grad for p in model.parameters() if p.requires_grad)
    assert planned["adamw"] == adamw_state_bytes(optimizer)
    assert planned["teacher"] == 0


def test_stage_one_trains_only_the_trigger_and_stage_two_keeps_a_teacher(toy_micro):
    from sgt.methods.align import AlignConfig
    from sgt.methods.trigger import TriggerConfig
    from sgt.trigger import SafetyTrigger

    shape = model_shape(str(toy_micro / "base"))
    trigger = stage_memory(shape, Stage("t", TriggerConfig(model="m", length=4, tied=False, dtype="float32"), "trigger"), ONE)
    vectors = SafetyTrigger(shape.hidden, 4, tied=False).vectors
    assert trigger["gradients"] == tensor_bytes([vectors]) and trigger["adamw"] == 2 * tensor_bytes([vectors])
    align = stage_memory(shape, Stage("a", AlignConfig(model="m", dtype="bfloat16"), "align"), ONE)
    assert align["teacher"] == align["weights"] == shape.parameters * 2  # a frozen bf16 copy
    lora = stage_memory(shape, Stage("a", AlignConfig(model="m", dtype="bfloat16", lora=True), "align"), ONE)
    assert lora["teacher"] == 0  # the adapters are disabled instead


def test_ddp_replicates_and_fsdp_shards(toy_micro):
    shape = model_shape(str(toy_micro / "base"))
    stage = finetune_stage("bfloat16")
    alone = stage_memory(shape, stage, ONE)
    ddp = stage_memory(shape, stage, Launch("DDP", 8, mixed_precision="bf16"))
    assert ddp["weights"] == alone["weights"] and ddp["adamw"] == alone["adamw"]
    assert ddp["gradients"] == 2 * alone["gradients"]  # DDP's all-reduce buckets hold a second copy
    fsdp = [stage_memory(shape, stage, Launch("FSDP", n, mixed_precision="bf16")) for n in (2, 4)]
    # float32 shards (accelerate upcasts trainable bf16 shards): twice the bytes, split over n processes
    assert fsdp[0]["adamw"] == 2 * fsdp[1]["adamw"] == alone["adamw"]
    assert fsdp[0]["logits"] == fsdp[1]["logits"] == alone["logits"]  # per process: not sharded


def test_known_shapes_count_the_published_parameters():
    from transformers import AutoConfig

    published = {"meta-llama/Llama-3.1-8B": 8_030_261_248, "Qwen/Qwen3-8B-Base": 8_190_735_360}
    for name, count in published.items():
        numbers = dict(KNOWN_SHAPES[name])
        shape = ModelShape.from_config(AutoConfig.for_model(numbers.pop("model_type"), **numbers), "table")
        assert shape.parameters == count, name


@pytest.fixture()
def no_network(monkeypatch):
    """No socket can connect; run from the repository root (configs name the launcher's file relative to it)."""
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def test_paper_dry_run_prints_the_plan_and_gpu_count_offline(no_network, tmp_path):
    code, out, err = run_cli("run", "configs/paper/llama3.1-8b.yaml", "--dry-run", "--gpu-memory", "80",
                             "--out", str(tmp_path / "run"))
    assert code == 0, err
    plan = out[out.index("memory plan"):]
    assert "8.03 B parameters" in plan and "table of known shapes" in plan
    assert "FSDP over 8 processes" in plan
    rows = {re.split(r"\s{2,}", line.strip())[0]: line.split()[-1] for line in plan.splitlines()[4:8]}
    # GPUs needed per stage: full fine-tuning under FSDP keeps float32 weights, gradients and AdamW
    # (16 bytes per parameter: 120 GiB) and must be split over 2 GPUs; stage 1 trains only the trigger
    assert rows == {"sft": "2", "sgt trigger": "1", "sgt align": "3", "attack (full, batch 2)": "2"}
    # stage 2 holds a whole bf16 teacher on every GPU next to its shards: 3 GPUs of 80 GiB, the launcher has 8
    assert "needs 3 GPU(s) of 80 GiB (the largest stage: sgt align)" in plan and ": enough" in plan

    code, out, _ = run_cli("run", "configs/paper/llama3.1-8b.yaml", "--dry-run", "--gpu-memory", "24",
                           "--out", str(tmp_path / "run"))
    # stage 1's logits (3 passes x 4 rows x 1024 tokens x 128k vocabulary) and stage 2's teacher are per GPU
    assert code == 0 and "does not fit on GPUs of 24 GiB: sgt trigger, sgt align" in out


def test_plan_says_why_when_the_shape_is_unknown(no_network, tmp_path):
    code, out, err = run_cli("run", "configs/paper/llama3.1-8b.yaml", "--dry-run", "--out", str(tmp_path / "run"),
                             "--set", "model=some-org/unknown-model")
    assert code == 0, err
    assert "memory plan: not available for some-org/unknown-model" in out


def test_a_gpu_size_that_is_no_size_is_one_line_error(tmp_path):
    code, _, err = run_cli("run", "configs/micro.yaml", "--dry-run", "--gpu-memory", "0", "--out", str(tmp_path / "r"))
    assert code == 2 and "--gpu-memory: '0' is not a GPU size" in err and len(err.strip().splitlines()) == 1


def test_ddp_needs_everything_on_each_gpu(no_network, tmp_path):
    """Under DDP full fine-tuning of an 8B model does not fit 80 GiB (bf16 weights, gradients twice, AdamW:
    10 bytes per parameter); LoRA fits one GPU per process."""
    code, out, err = run_cli("run", "configs/paper/llama3.1-8b.yaml", "--dry-run", "--out", str(tmp_path / "run"),
                             "--set", "launcher=[accelerate,launch,--config_file,configs/accelerate/ddp.yaml]",
                             "--set", "attack.lora=[true]")
    assert code == 0, err
    plan = out[out.index("memory plan"):]
    assert "DDP over 8 processes" in plan
    rows = {re.split(r"\s{2,}", line.strip())[0]: line.strip() for line in plan.splitlines()[4:8]}
    assert rows["sft"].endswith("does not fit") and rows["sgt align"].endswith("does not fit")
    assert rows["attack (LoRA, batch 2)"].endswith("1 per process")
    assert "does not fit on GPUs of 80 GiB: sft, sgt align" in plan
