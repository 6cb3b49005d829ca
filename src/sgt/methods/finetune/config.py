"""Settings of supervised fine-tuning: the sft defense and the malicious fine-tuning attack."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import cfg
from ...data.formats import FORMATS
from ...data.sources import DataFields
from ...errors import UserError
from ...refusal import REFUSAL
from ...training import LoraFields, OptimFields, validate_optim


@dataclass
class FinetuneConfig(OptimFields, LoraFields, DataFields):
    model: str = cfg("", "Model to fine-tune: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: a Hugging Face checkpoint plus config.yaml and metrics.json.")
    format: str = cfg("plain", "Prompt format: plain (User:/Assistant:) or chat (the tokenizer's template).")
    train_on: str = cfg("response", "Which tokens carry the loss: response (default) or all (pretraining).")
    refuse_harmful: bool = cfg(False, "Answer harmful prompts with `refusal` instead of their response "
                                      "(conventional safety alignment: the sft defense).")
    refusal: str = cfg(REFUSAL, "Refusal target text for harmful prompts.")
    rows: int | None = cfg(None, "Rows sampled from the data (None: all rows), `harm_ratio` of them harmful: "
                                 "caps the training cost, as stage 2's `rows` does.")
    harm_ratio: float = cfg(0.5, "Fraction of harmful rows in the sample when `rows` is set.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")

    def __post_init__(self):
        validate_optim(self)
        if self.rows is not None and self.rows <= 0:
            raise UserError(f"rows must be positive, got {self.rows}")
        if not 0 <= self.harm_ratio <= 1:
            raise UserError(f"harm_ratio must be in [0, 1], got {self.harm_ratio}")
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")
        if self.train_on not in ("response", "all"):
            raise UserError(f"train_on must be response or all, got {self.train_on!r}")


@dataclass
class AttackConfig(FinetuneConfig):
    """Malicious fine-tuning (reference: 500 BeaverTails pairs, lr 1e-5, batch 2, length 512, 1 epoch)."""

    data: str = cfg("PKU-Alignment/BeaverTails", "Harmful QA data (rows labelled harmful are used).")
    shots: int = cfg(500, "Attacker data budget: number of training rows, sampled with `seed`.")
    harmful_fraction: float = cfg(1.0, "Fraction of the rows that are harmful pairs (1: harmful fine-tuning; "
                                       "e.g. 0.1: benign fine-tuning data with 10% harmful rows, the Vaccine/Booster "
                                       "protocol; 0: benign fine-tuning only). The rest come from benign_data.")
    benign_data: str = cfg("", "Benign fine-tuning data (prompt/response rows labelled unharmful, any schema of "
                               "--data) for harmful_fraction < 1.")
    allow_repeat: bool = cfg(False, "Allow shots larger than the dataset by sampling with repetition.")
    save_at_examples: list[int] = cfg([], "Also save the model after this many training examples (of all epochs) "
                                          "were seen, in OUT/at-N (the reference evaluated after 100): one attack "
                                          "run then gives a harm-vs-examples curve.")
    # The reference attack's optimiser (4.2_mft.py): torch AdamW, weight decay 0.01, constant lr, no clipping.
    scheduler: str = cfg("constant", "Learning-rate schedule (reference attack: constant).")
    weight_decay: float = cfg(0.01, "AdamW weight decay (reference attack: 0.01).")
    max_grad_norm: float = cfg(0.0, "Gradient clipping norm (0: no clipping, as the reference attack).")

    def __post_init__(self):
        super().__post_init__()
        if self.rows is not None:
            raise UserError("an attack samples `shots` rows (and harmful_fraction of them harmful): rows does not "
                            "apply; use shots")
        if self.shots <= 0:
            raise UserError(f"shots must be a positive number of examples, got {self.shots}")
        if not 0 <= self.harmful_fraction <= 1:
            raise UserError(f"harmful_fraction must be between 0 and 1, got {self.harmful_fraction}")
        if any(n <= 0 for n in self.save_at_examples):
            raise UserError(f"save_at_examples must be positive numbers of examples, got {self.save_at_examples}")
        if self.harmful_fraction < 1 and not self.benign_data:
            raise UserError("harmful_fraction < 1 needs benign_data (benign prompt/response rows to mix in)")
