"""Settings of stage 1 (reference: seed script 3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import cfg, reference_defaults
from ...data.formats import FORMATS
from ...data.sources import DataFields
from ...errors import UserError
from ...refusal import REFUSAL, HeldOutFields
from ...training import OptimFields, validate_optim


@reference_defaults
@dataclass
class TriggerConfig(HeldOutFields, OptimFields, DataFields):
    model: str = cfg("", "Frozen model to learn the trigger for: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: trigger.safetensors + trigger.json + config.yaml + metrics.json.")
    data: str = cfg("allenai/wildguardmix", "Training data; its harmful prompts are used (benign ones too if benign_weight > 0).")
    format: str = cfg("plain", "Prompt format: plain or chat.")
    length: int = cfg(1, "Number of trigger positions inserted after the user-turn anchor.")
    tied: bool = cfg(True, "One vector repeated `length` times (reference) instead of `length` independent vectors.")
    init: str = cfg("random", "Initialisation: random (N(0, init_std^2)) or text (embeddings of init_text).")
    init_std: float = cfg(0.01, "Standard deviation of the random initialisation.")
    init_text: str = cfg("You are a safe and responsible assistant.", "Text whose token embeddings initialise the trigger (init: text).")
    refusal: str = cfg(REFUSAL, "Refusal target the trigger should evoke on harmful prompts.")
    consistency_weight: float = cfg(1.0, "Weight of the perturbation-consistency KL term.")
    noise_std: float = cfg(0.01, "Std of the Gaussian noise added to the trigger for the consistency term.")
    noise_draws: int = cfg(2, "Noise draws per step for the consistency term.")
    temperature: float = cfg(1.0, "Softmax temperature of the consistency KL.")
    benign_weight: float = cfg(0.0, "Weight of KL(no trigger || trigger) on benign answers (0: off, as the reference).")
    max_rows: int | None = cfg(None, "Use at most this many training prompts (sampled with seed; default all).")
    eval_steps: int = cfg(0, "Measure the refusal rate on eval_data every N steps (0: only before and after "
                             "training; in one process only): the validation curve of metrics.json, from which keep "
                             "picks the trigger.")
    keep: str = cfg("last", "Which trigger to keep: last (the end of training) or best (the highest refusal rate "
                            "on eval_data among the eval_steps measurements and the end; the earliest on ties).")
    min_refusal: float = cfg(0.9, "A trigger that makes the frozen model refuse less than this fraction of eval_data "
                                  "is weak: stage 2 can at best copy its teacher (see on_weak).")
    on_weak: str = cfg("warn", "What a weak trigger does: warn (a warning line; the trigger is kept) or stop "
                               "(`sgt run` stops before stage 2 with a one-line error; the trigger is kept).")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    reference: bool = cfg(False, "Start from every setting of the reference code (fields set explicitly still win).")
    # reference optimisation defaults: plain torch AdamW (weight decay 0.01, no clipping), constant lr
    lr: float = cfg(1e-3, "Learning rate (AdamW) of the trigger.")
    batch_size: int = cfg(4, "Per-device batch size.")
    max_length: int = cfg(1024, "Maximum tokens per row.")
    scheduler: str = cfg("constant", "Learning-rate schedule.")
    weight_decay: float = cfg(0.01, "AdamW weight decay (reference: 0.01).")
    max_grad_norm: float = cfg(0.0, "Gradient clipping norm (0: none, as the reference).")

    # The reference's stage-1 choices (seed script 3.1).
    REFERENCE: ClassVar[dict] = {
        "length": 1, "tied": True, "init": "random", "init_std": 0.01, "consistency_weight": 1.0, "noise_std": 0.01,
        "noise_draws": 2, "temperature": 1.0, "benign_weight": 0.0, "lr": 1e-3, "epochs": 1.0, "batch_size": 4,
        "max_length": 1024, "scheduler": "constant", "weight_decay": 0.01, "max_grad_norm": 0.0, "seed": 42,
    }

    def __post_init__(self):
        validate_optim(self)
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")
        if self.init not in ("random", "text"):
            raise UserError(f"init must be random or text, got {self.init!r}")
        if self.length < 1:
            raise UserError(f"length must be at least 1, got {self.length}")
        if self.noise_draws < 0 or self.noise_std < 0:
            raise UserError("noise_draws and noise_std must not be negative")
        if self.keep not in ("last", "best"):
            raise UserError(f"keep must be last or best, got {self.keep!r}")
        if self.keep == "best" and not (self.eval_data and self.eval_steps):
            raise UserError("keep: best chooses among validation measurements: set eval_data and eval_steps")
        if self.on_weak not in ("warn", "stop"):
            raise UserError(f"on_weak must be warn or stop, got {self.on_weak!r}")
        if not 0 <= self.min_refusal <= 1 or self.eval_steps < 0:
            raise UserError("min_refusal must be in [0, 1] and eval_steps 0 or more")
