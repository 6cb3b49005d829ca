"""What the literature's defenses share: their settings, their three kinds of training data, a Trainer
base class, and `sgt defend` (apply any registered defense from the command line).

Most defenses against harmful fine-tuning train on three streams at once:
    refusal  - harmful prompts answered with the refusal      (the alignment data)
    harmful  - harmful prompts with harmful answers            (what an attacker would teach)
    benign   - benign prompts with their answers               (what must be retained)
`TripleDataset` walks the refusal rows (one epoch = every refusal row once) and pairs each with a
harmful and a benign row, cycled in a seeded order, so every batch holds all three (the collator pads
each stream on its own). A defense's loss is a function of those three batches.

    sgt defend --defense repnoise --model M --data defense.jsonl --out runs/repnoise --settings beta=0.001
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import Trainer

from ...config import cfg
from ...data.collate import pad_batch
from ...data.formats import FORMATS, PromptFormat
from ...data.sources import DataFields, Example
from ...errors import UserError
from ...losses import response_ce
from ...refusal import REFUSAL
from ...training import ComponentLoggingMixin, LoraFields, OptimFields, check_finite, validate_optim

STREAMS = ("refusal", "harmful", "benign")


@dataclass
class DefenseTrainingConfig(OptimFields, LoraFields, DataFields):
    """Settings every trained baseline defense shares (each adds its own coefficients)."""

    model: str = cfg("", "Model to defend: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: the defended model (a plain Hugging Face checkpoint).")
    format: str = cfg("plain", "Prompt format: plain or chat.")
    refusal: str = cfg(REFUSAL, "Refusal target of harmful prompts (the alignment data).")
    rows: int | None = cfg(None, "Refusal rows per epoch (None: every harmful prompt of the data).")
    benign_ce_weight: float = cfg(0.0, "Weight of LM cross-entropy on benign answers added to the alignment loss "
                                       "(0: the paper's objective; the sft defense trains on both).")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    lr: float = cfg(2e-5, "Learning rate (AdamW).")
    batch_size: int = cfg(4, "Rows of each stream per batch.")
    max_length: int = cfg(256, "Maximum tokens per row.")

    def __post_init__(self):
        validate_optim(self)
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")


def streams(examples: list[Example], fmt: PromptFormat, refusal: str, rows: int | None, seed: int) -> dict[str, list]:
    """The three streams of encoded rows from defense data (WildGuardTrain schema)."""
    harmful_prompts = [e for e in examples if e.harmful]
    out = {
        "refusal": [fmt.encode(e.prompt, refusal).as_dict() for e in harmful_prompts],
        "harmful": [fmt.encode(e.prompt, e.response).as_dict() for e in harmful_prompts
                    if e.response and e.response_harmful],
        "benign": [fmt.encode(e.prompt, e.response).as_dict() for e in examples if e.harmful is False and e.response],
    }
    for name, what in (("refusal", "harmful prompts"), ("harmful", "harmful prompts with a harmful response "
                       "(WildGuard: response_harm_label=harmful)"), ("benign", "benign prompts with a response")):
        if not out[name]:
            raise UserError(f"this defense needs {what} in its data; the defense data has none")
    if rows and rows < len(out["refusal"]):
        out["refusal"] = random.Random(seed).sample(out["refusal"], rows)
    return out


class TripleDataset(torch.utils.data.Dataset):
    """Item i: refusal row i with a harmful and a benign row, cycled in a seeded order."""

    def __init__(self, rows: dict[str, list], seed: int):
        self.rows = rows
        rng = random.Random(seed)
        self.order = {k: rng.sample(range(len(v)), len(v)) for k, v in rows.items()}

    def __len__(self) -> int:
        return len(self.rows["refusal"])

    def __getitem__(self, i: int) -> dict:
        out = {"refusal": self.rows["refusal"][i]}
        for name in ("harmful", "benign"):
            order = self.order[name]
            out[name] = self.rows[name][order[i % len(order)]]
        return out


class TripleCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        return {name: pad_batch([item[name] for item in items], self.pad_id, "right") for name in STREAMS}


def lm_loss(model, batch: dict, **kwargs) -> tuple[torch.Tensor, object]:
    """Response cross-entropy of one stream's batch, and the model outputs."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **kwargs)
    return response_ce(outputs.logits, batch["labels"]), outputs


def alignment_loss(model, inputs: dict, config) -> tuple[torch.Tensor, dict]:
    """The alignment loss the baselines start from: CE toward the refusal (+ benign CE if weighted)."""
    loss, _ = lm_loss(model, inputs["refusal"])
    parts = {"refusal_ce": loss.detach()}
    if config.benign_ce_weight:
        benign, _ = lm_loss(model, inputs["benign"])
        loss = loss + config.benign_ce_weight * benign
        parts["benign_ce"] = benign.detach()
    return loss, parts


def flat_norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum(t.double().pow(2).sum() for t in tensors))  # double: norms of millions of terms


@contextmanager
def moved(params, direction, scale: float):
    """Temporarily move the weights by scale * direction; restored exactly (from a copy) afterwards."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d.to(p.dtype), alpha=scale)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


class DefenseTrainer(ComponentLoggingMixin, Trainer):
    """A Trainer over triples whose loss is `self.objective(model, inputs) -> (loss, parts)`.

    Defenses that need several forward/backward passes per step (simulated attacks, perturbations)
    override `training_step` instead and fill the gradients themselves.
    """

    def __init__(self, *args, defense_config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.defense_config = defense_config

    def objective(self, model, inputs: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, parts = self.objective(model, inputs)
        check_finite(loss, self.state.global_step + 1)
        self._record(parts)
        return (loss, None) if return_outputs else loss

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


class GradientDefenseTrainer(DefenseTrainer):
    """For defenses whose update is not the gradient of one loss: `gradients(model, inputs)` returns the
    gradient to apply (one tensor per trainable parameter) and the parts to log. Single process only:
    gradients taken with torch.autograd.grad bypass DDP's all-reduce."""

    def gradients(self, model, inputs: dict) -> tuple[list[torch.Tensor], dict]:
        raise NotImplementedError

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.args.world_size > 1:
            raise UserError(f"{type(self).__name__} computes its gradients by hand and runs in one process; "
                            "drop the launcher for this defense")
        model.train()
        inputs = self._prepare_inputs(inputs)
        grads, parts = self.gradients(model, inputs)
        scale = 1.0 / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        for p, g in zip(self.trainable(), grads):
            if g is None:
                continue
            g = g.to(p.dtype) * scale
            p.grad = g if p.grad is None else p.grad + g
        loss = parts.get("loss", next(iter(parts.values())))
        check_finite(loss, self.state.global_step + 1)
        self._record(parts)
        return loss.detach() * scale


def train_defense(config: DefenseTrainingConfig, trainer_class: type, model=None, tokenizer=None,
                  examples: list[Example] | None = None, **trainer_kwargs) -> dict:
    """Train `config.model` with `trainer_class` on the three streams of `config.data`; writes a plain
    checkpoint to `config.out` and returns the metrics."""
    from ...data.sources import load_data
    from ...models import load_model, load_tokenizer
    from ...training import apply_lora, component_history, finish_stage, save_model, train_rows
    from ...utils import output_dir, seed_everything

    if not config.out:
        raise UserError("no output folder given: pass --out DIR")
    seed_everything(config.seed)
    examples = examples if examples is not None else load_data(config)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    dataset = TripleDataset(streams(examples, fmt, config.refusal, config.rows, config.seed), config.seed)
    if config.lora:
        model = apply_lora(model, config)
    with output_dir(config.out, keep_partial=config.save_steps > 0, kind="model") as work:
        result = train_rows(model, tokenizer, dataset, config, work, trainer_class=trainer_class,
                            collator=TripleCollator(tokenizer.pad_token_id), defense_config=config, **trainer_kwargs)
        trainer = result["trainer"]
        metrics = {**result["metrics"], "streams": {k: len(v) for k, v in dataset.rows.items()},
                   "component_history": component_history(trainer)}
        trained = trainer.accelerator.unwrap_model(result["model"])
        finish_stage(work, config, metrics, save=lambda folder: save_model(trained, tokenizer, folder,
                                                                           merge_lora=config.merge_lora))
    return metrics
