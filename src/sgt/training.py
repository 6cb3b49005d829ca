"""Shared pieces of every training stage: TrainingArguments, LoRA, datasets of encoded rows, component
logging, resume, and saving-and-cleaning-up.

Stage 1 (methods/trigger), stage 2 (methods/align), conventional SFT and the attack (methods/finetune)
and the toy base's pretraining all train with a `transformers.Trainer`; this module keeps what they
share in one place so that they stay consistent (seeds, precision, logging, checkpoints only when
asked, no remote reporting, the same resume and output contract).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import cfg
from .data.formats import IGNORE_INDEX, PromptFormat
from .data.sources import Example
from .errors import TrainingDiverged, UserError


@dataclass
class OptimFields:
    """Optimisation settings shared by the training stages (each stage sets its own defaults)."""

    lr: float = cfg(1e-5, "Learning rate (AdamW).")
    epochs: float = cfg(1.0, "Number of passes over the training data.")
    batch_size: int = cfg(2, "Per-device batch size.")
    grad_accum: int = cfg(1, "Gradient accumulation steps (effective batch = batch_size x grad_accum x GPUs).")
    max_length: int = cfg(512, "Maximum tokens per row (longer rows are cut at the end).")
    scheduler: str = cfg("linear", "Learning-rate schedule (any transformers scheduler name, e.g. linear, cosine, constant).")
    warmup_ratio: float = cfg(0.0, "Fraction of steps used for linear warm-up.")
    weight_decay: float = cfg(0.0, "AdamW weight decay.")
    max_grad_norm: float = cfg(1.0, "Gradient clipping norm (0: no clipping).")
    gradient_checkpointing: bool = cfg(False, "Recompute activations in the backward pass (saves memory on large models).")
    group_by_length: bool = cfg(False, "Batch rows of similar length together (less padding, faster on mixed lengths).")
    seed: int = cfg(42, "Random seed (data order, sampling, initialisation).")
    dtype: str = cfg("auto", "Weights dtype: auto (bf16 on CUDA, fp32 on CPU), bfloat16, float16 or float32.")
    logging_steps: int = cfg(10, "Log losses every N optimiser steps.")
    save_steps: int = cfg(0, "Save a Trainer checkpoint every N steps into OUT.partial/checkpoints, keeping only the newest (0: none); "
                              "an interrupted run then continues with --resume.")
    resume: bool = cfg(False, "Resume from the last checkpoint in OUT.partial/checkpoints (needs save_steps).")
    progress: bool = cfg(True, "Show progress bars.")


@dataclass
class LoraFields:
    lora: bool = cfg(False, "Train LoRA adapters instead of all weights.")
    lora_r: int = cfg(16, "LoRA rank.")
    lora_alpha: int = cfg(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = cfg(0.0, "LoRA dropout.")
    lora_targets: str = cfg("all-linear", "LoRA target modules: all-linear or a comma-separated list of module names.")
    merge_lora: bool = cfg(True, "Merge the adapters into the weights on save (a plain checkpoint); false saves the adapter only.")


def validate_optim(config: OptimFields) -> None:
    checks = [
        (math.isfinite(config.lr) and config.lr > 0, f"lr must be positive and finite, got {config.lr}"),
        (config.epochs > 0, f"epochs must be positive, got {config.epochs}"),
        (config.batch_size >= 1, f"batch_size must be at least 1, got {config.batch_size}"),
        (config.grad_accum >= 1, f"grad_accum must be at least 1, got {config.grad_accum}"),
        (config.max_length >= 8, f"max_length must be at least 8 tokens, got {config.max_length}"),
        (0 <= config.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def training_arguments(config: OptimFields, output_dir: str | Path, num_rows: int,
                       model_dtype: torch.dtype, **overrides):
    """TrainingArguments from our fields: no remote reporting, checkpoints only when asked."""
    from transformers import TrainingArguments

    from .models import mixed_precision_flags

    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = math.ceil(num_rows / (config.batch_size * world)) * config.epochs / config.grad_accum
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        lr_scheduler_type=config.scheduler,
        warmup_steps=int(config.warmup_ratio * steps),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        # Resuming needs only the newest checkpoint; older ones (1.6 GB each with Adam state on a
        # 135M model) would pile up until the stage ends. Trainer deletes the old one after the new
        # one is fully written, so an interrupt during a save still leaves one to resume from.
        save_total_limit=1,
        save_only_model=False,
        report_to="none",
        logging_nan_inf_filter=False,  # a NaN loss must show (and stop the stage), not be averaged away
        disable_tqdm=not config.progress,
        remove_unused_columns=False,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        ddp_find_unused_parameters=False,
        log_level="warning",
        # Without a GPU, `use_cpu` makes accelerate form a gloo process group under torchrun.
        use_cpu=not torch.cuda.is_available(),
        **mixed_precision_flags(model_dtype),
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def apply_lora(model, config: LoraFields):
    """Wrap `model` with LoRA adapters (PEFT); the base weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets
    target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"could not add LoRA adapters: {exc} (set --lora-targets to module names of this model)") from None


def save_model(model, tokenizer, folder: str | Path, merge_lora: bool = True) -> None:
    """Save a plain Hugging Face checkpoint (safetensors); LoRA is merged unless told otherwise."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and merge_lora:
        model = model.merge_and_unload()
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


class EncodedDataset(torch.utils.data.Dataset):
    """Rows encoded once up front (they are small); each row is a dict for the Collator."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def encode_examples(examples: list[Example], fmt: PromptFormat, train_on: str = "response",
                    with_harm: bool = False, name: str = "data") -> EncodedDataset:
    """Encode prompt+response rows. `train_on="all"` puts the loss on every token (pretraining)."""
    rows = []
    for number, example in enumerate(examples, start=1):
        if example.response is None:
            raise UserError(f"{name}: row {number} has no response to train on; map one with --columns response=NAME")
        encoded = fmt.encode(example.prompt, example.response, row=number).as_dict()
        if train_on == "all":
            encoded["labels"] = list(encoded["input_ids"])
        if all(label == IGNORE_INDEX for label in encoded["labels"]):
            continue  # prompt filled max_length: nothing to learn from this row
        if with_harm:
            encoded["harmful"] = bool(example.harmful)
        rows.append(encoded)
    if not rows:
        raise UserError(f"{name}: no row has response tokens within max_length; raise --max-length")
    return EncodedDataset(rows)


def train_rows(model, tokenizer, dataset, config: OptimFields, work_dir, trainer_class=None,
               callbacks: list | None = None, collator=None, **trainer_kwargs) -> dict:
    """Run a Trainer over encoded rows (resuming from `work_dir/checkpoints` when config.resume);
    returns {"model": trained model, "metrics": {...}, "trainer": the Trainer}. Under FSDP the model is
    whole on rank 0 only (sgt.sharding): save and evaluate it there."""
    import time

    from transformers import Trainer

    from .data.collate import Collator
    from .sharding import full_model, remember_structure

    remember_structure(model)  # under FSDP: to hand rank 0 the whole model after training
    if config.gradient_checkpointing:
        model.config.use_cache = False
    args = training_arguments(config, Path(work_dir) / "checkpoints", len(dataset), next(model.parameters()).dtype)
    trainer = (trainer_class or Trainer)(model=model, args=args, train_dataset=dataset,
                                         data_collator=collator or Collator(tokenizer.pad_token_id, "right"),
                                         callbacks=callbacks, **trainer_kwargs)
    if not config.progress:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)  # no per-step log lines either
        trainer.remove_callback(ProgressCallback)
    trainer.add_callback(finite_loss_callback())
    resume = last_checkpoint(Path(work_dir) / "checkpoints") if getattr(config, "resume", False) else None
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    check_finite(torch.tensor(result.training_loss), trainer.state.global_step)
    check_finite_weights(trainer.model)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    metrics = {
        "rows": len(dataset),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "seconds": round(time.time() - start, 2),
    }
    # under FSDP every process gathers; rank 0 gets the whole model, the others their shard
    return {"model": full_model(trainer.model, trainer.accelerator.device), "metrics": metrics, "trainer": trainer}


# A diverged stage (NaN or inf in its loss or weights) fails at once: its model answers nothing, and
# an empty answer must never be scored as a refusal. Stages with their own loss check it every step
# (check_finite); every stage's logged losses and final weights are checked in train_rows.


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise TrainingDiverged(f"the loss became {loss.float().mean().item()} at step {step}; lower the "
                               "learning rate or use float32/bfloat16 instead of float16")


def check_finite_weights(model) -> None:
    """TrainingDiverged when any weight of the trained `model` is NaN or inf."""
    with torch.no_grad():
        broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        raise TrainingDiverged(f"{len(broken)} weight tensor(s) hold NaN or inf after training (e.g. {broken[0]}); "
                               "lower the learning rate")


def finite_loss_callback():
    """A TrainerCallback that stops a stage at the first logged loss that is NaN or inf (the plain
    Trainer's loss has no per-step check of its own). Built here so that importing this module (every
    config does) does not import transformers."""
    from transformers import TrainerCallback

    class FiniteLossCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                check_finite(torch.tensor(float(logs["loss"])), state.global_step)

    return FiniteLossCallback()


def last_checkpoint(folder: Path) -> str:
    """The newest Trainer checkpoint in `folder`, or a one-line error saying how to get one."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        raise UserError(f"--resume: no checkpoint found in {folder}; run without --resume "
                        "(set --save-steps N to write checkpoints)")
    return last


class ComponentLoggingMixin:
    """Adds running means of extra loss components to the Trainer's logs (TRL style)."""

    loss_is_scaled_for_ga = False  # our losses are batch means: let the Trainer divide by GA steps

    def _record(self, parts: dict) -> None:
        store = self.__dict__.setdefault("_components", {})
        for name, value in parts.items():
            store.setdefault(name, []).append(float(value))
        self.__dict__.setdefault("component_names", set()).update(parts)

    def log(self, logs: dict, *args, **kwargs) -> None:
        store = self.__dict__.get("_components", {})
        if "loss" in logs:
            for name, values in store.items():
                if values:
                    logs[name] = round(sum(values) / len(values), 5)
            store.clear()
        super().log(logs, *args, **kwargs)


def component_history(trainer, names: tuple[str, ...] | None = None) -> list[dict]:
    """The logged loss components per logging step (for metrics.json); default: every recorded one."""
    names = tuple(names if names is not None else sorted(getattr(trainer, "component_names", ())))
    return [{k: v for k, v in r.items() if k in ("step", "loss", *names)}
            for r in trainer.state.log_history if any(n in r for n in names)]


def finish_stage(work: Path, config, metrics: dict, save=None) -> None:
    """Rank 0 writes what a stage leaves behind: its artefact (`save(work)`), config.yaml and
    metrics.json; the resume checkpoints of a finished stage are no longer needed."""
    from .config import save_config
    from .utils import atomic_write_json, is_main_process

    if not is_main_process():
        return
    if save is not None:
        save(work)
    save_config(config, work)
    atomic_write_json(work / "metrics.json", metrics)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
