"""Supervised fine-tuning: the `sft` baseline defense, the malicious fine-tuning attack, pretraining.

One mechanism, three uses:
  sgt sft    - fine-tune on any prompt/response data; with `refuse_harmful` it is conventional
               safety alignment (harmful prompts answered by the refusal target);
  sgt attack - the adversary: `shots` harmful question->answer pairs, sampled reproducibly;
  toy build  - the toy base's "pretraining" (loss on every token).
Loss is on response tokens only unless `train_on: all`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from .config import cfg, save_config
from .data.formats import FORMATS, PromptFormat
from .data.sources import DataFields, Example, load_data, sample_shots
from .errors import UserError
from .training import (
    LoraFields,
    OptimFields,
    apply_lora,
    encode_examples,
    save_model,
    train_rows,
    validate_optim,
)
from .utils import atomic_write_json, is_main_process, output_dir, seed_everything

REFUSAL = "I can't answer."


@dataclass
class FinetuneConfig(OptimFields, LoraFields, DataFields):
    model: str = cfg("", "Model to fine-tune: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: a Hugging Face checkpoint plus config.yaml and metrics.json.")
    format: str = cfg("plain", "Prompt format: plain (User:/Assistant:) or chat (the tokenizer's template).")
    train_on: str = cfg("response", "Which tokens carry the loss: response (default) or all (pretraining).")
    refuse_harmful: bool = cfg(False, "Answer harmful prompts with `refusal` instead of their response "
                                      "(conventional safety alignment: the sft defense).")
    refusal: str = cfg(REFUSAL, "Refusal target text for harmful prompts.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")

    def __post_init__(self):
        validate_optim(self)
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")
        if self.train_on not in ("response", "all"):
            raise UserError(f"train_on must be response or all, got {self.train_on!r}")


@dataclass
class AttackConfig(FinetuneConfig):
    """Malicious fine-tuning (reference: 500 BeaverTails pairs, lr 1e-5, batch 2, length 512, 1 epoch)."""

    data: str = cfg("PKU-Alignment/BeaverTails", "Harmful QA data (rows labelled harmful are used).")
    shots: int = cfg(500, "Attacker data budget: number of harmful pairs, sampled with `seed`.")
    allow_repeat: bool = cfg(False, "Allow shots larger than the dataset by sampling with repetition.")
    # The reference attack's optimiser (4.2_mft.py): torch AdamW, weight decay 0.01, constant lr, no clipping.
    scheduler: str = cfg("constant", "Learning-rate schedule (reference attack: constant).")
    weight_decay: float = cfg(0.01, "AdamW weight decay (reference attack: 0.01).")
    max_grad_norm: float = cfg(0.0, "Gradient clipping norm (0: no clipping, as the reference attack).")

    def __post_init__(self):
        super().__post_init__()
        if self.shots <= 0:
            raise UserError(f"shots must be a positive number of examples, got {self.shots}")


def prepare_sft_examples(examples: list[Example], refuse_harmful: bool, refusal: str) -> list[Example]:
    """Conventional safety alignment data: harmful prompts -> refusal, benign -> their answer."""
    if not refuse_harmful:
        return examples
    out = []
    for e in examples:
        if e.harmful:
            out.append(Example(e.prompt, refusal, True, e.category))
        elif e.response:
            out.append(e)
    return out


def attack_examples(examples: list[Example], shots: int, seed: int, allow_repeat: bool) -> list[Example]:
    """The attacker's sample: `shots` harmful rows that have a response to imitate."""
    harmful = [e for e in examples if e.harmful and e.response]
    if not harmful:
        raise UserError("the attack data has no harmful rows with a response (BeaverTails: is_safe=false)")
    return sample_shots(harmful, shots, seed, allow_repeat)


def finetune(model, tokenizer, examples: list[Example], config: FinetuneConfig, work_dir) -> dict:
    """Train `model` on `examples` (LoRA-wrapped if asked); returns {"model", "metrics"}. Does not save."""
    seed_everything(config.seed)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    dataset = encode_examples(examples, fmt, train_on=config.train_on, name=config.data or "data")
    if config.lora:
        model = apply_lora(model, config)
    return train_rows(model, tokenizer, dataset, config, work_dir)


def run_finetune(config: FinetuneConfig, examples: list[Example] | None = None, model=None,
                 tokenizer=None) -> dict:
    """Load what is not given, fine-tune, and write a plain HF checkpoint to `config.out`."""
    from .models import load_model, load_tokenizer

    if not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if not config.model and model is None:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    if examples is None:
        examples = load_data(config)
    if isinstance(config, AttackConfig):
        examples = attack_examples(examples, config.shots, config.seed, config.allow_repeat)
    else:
        examples = prepare_sft_examples(examples, config.refuse_harmful, config.refusal)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    with output_dir(config.out) as work:
        result = finetune(model, tokenizer, examples, config, work)
        if is_main_process():  # under torchrun/accelerate, rank 0 writes
            trained = result["trainer"].accelerator.unwrap_model(result["model"])
            save_model(trained, tokenizer, work, merge_lora=config.merge_lora)
            save_config(config, work)
            atomic_write_json(work / "metrics.json", result["metrics"])
            shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return result["metrics"]
