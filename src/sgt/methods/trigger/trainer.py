"""Stage 1: learn the Safety Guidance Trigger on the frozen model (seed script 3.1).

Only the trigger is trained. On harmful prompts the loss is (`trigger_loss`)
    CE(refusal target | prompt with trigger)                      (response tokens)
  + w_c * mean_d KL( p_trigger (fixed) || p_(trigger + eps_d) )   eps_d ~ N(0, noise_std^2), d = 1..draws
and, optionally, on benign prompts w_b * KL( p_no_trigger || p_trigger ) so that the trigger leaves
benign answers unchanged (not in the reference; off by default).

    sgt trigger --model M --data allenai/wildguardmix --out runs/trigger
"""

from __future__ import annotations

import random

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from ...data.formats import PromptFormat
from ...data.sources import Example, load_data
from ...errors import UserError
from ...losses import masked_kl, predicting_mask, response_ce
from ...refusal import held_out_prompts, refusal_rate
from ...training import (
    ComponentLoggingMixin,
    EncodedDataset,
    check_finite,
    component_history,
    finish_stage,
    train_rows,
)
from ...trigger import TRIGGER_FILE, SafetyTrigger, embedding_fingerprint, remove_trigger_positions, text_init
from ...utils import is_main_process, output_dir, seed_everything, write_jsonl
from .config import TriggerConfig

COMPONENTS = ("refusal_ce", "consistency_kl", "benign_kl")


def trigger_loss(lm, trigger: SafetyTrigger, batch: dict, config: TriggerConfig) -> tuple[torch.Tensor, dict]:
    """The stage-1 objective on one batch (see the module docstring); returns (loss, detached parts)."""
    ids, mask, labels, pos, harmful = (batch[k] for k in ("input_ids", "attention_mask", "labels", "trigger_pos", "harmful"))
    embeds = lm.get_input_embeddings()(ids)

    def logits_with_trigger(noise_std: float = 0.0, with_labels=None):
        e, m, lab = trigger.insert(embeds, mask, pos, with_labels, noise_std)
        return lm(inputs_embeds=e, attention_mask=m).logits, lab

    logits, labels_t = logits_with_trigger(with_labels=labels)
    parts = {"refusal_ce": response_ce(logits, labels_t, rows=harmful)}
    loss = parts["refusal_ce"]
    if config.consistency_weight and config.noise_draws:
        response = predicting_mask(labels_t) & harmful.unsqueeze(1)
        kl = sum(masked_kl(logits.detach(), logits_with_trigger(config.noise_std)[0], response, config.temperature)
                 for _ in range(config.noise_draws)) / config.noise_draws
        parts["consistency_kl"] = kl
        loss = loss + config.consistency_weight * kl
    if config.benign_weight and (~harmful).any():
        with torch.no_grad():
            plain = lm(input_ids=ids, attention_mask=mask).logits
        benign = predicting_mask(labels) & ~harmful.unsqueeze(1)
        # Compare each benign position with and without the trigger (trigger positions cut out).
        kept = remove_trigger_positions(logits, pos, trigger.length)
        parts["benign_kl"] = masked_kl(plain, kept, benign, config.temperature)
        loss = loss + config.benign_weight * parts["benign_kl"]
    return loss, {k: v.detach() for k, v in parts.items()}


class TriggeredLM(nn.Module):
    """A frozen causal LM plus a trainable trigger; `forward` returns the stage-1 loss and its parts.

    The whole loss is computed inside `forward` so that the Trainer (and DDP under accelerate) sees
    one ordinary forward call per step.
    """

    def __init__(self, lm, trigger: SafetyTrigger, config: TriggerConfig):
        super().__init__()
        self.lm = lm.requires_grad_(False)
        self.trigger = trigger
        self.config = config

    def forward(self, **batch):
        loss, parts = trigger_loss(self.lm, self.trigger, batch, self.config)
        return {"loss": loss, **parts}


class ValidationCurve(TrainerCallback):
    """Every `every` steps: the refusal rate on held-out prompts with the current trigger (the validation
    curve); with `keep_best`, the vectors of the best measurement are kept aside (the earliest on ties)."""

    def __init__(self, measure, trigger: SafetyTrigger, every: int, keep_best: bool):
        self.measure, self.trigger, self.every, self.keep_best = measure, trigger, every, keep_best
        self.curve: list[dict] = []
        self.last: dict | None = None   # the latest measurement: step, rate, generations, vectors
        self.best: dict | None = None

    def record(self, step: int) -> float:
        rate, rows = self.measure(self.trigger)
        self.curve.append({"step": step, "refusal_rate": rate})
        self.last = {"step": step, "rate": rate, "rows": rows, "vectors": self.trigger.vectors.detach().clone()}
        if self.keep_best and (self.best is None or rate > self.best["rate"]):
            self.best = self.last
        return rate

    def on_step_end(self, args, state, control, **kwargs):
        # In one process only: under several, rank 0 generating alone would wait for the others' shards.
        if self.every and state.global_step % self.every == 0 and args.world_size == 1:
            self.record(state.global_step)


class TriggerTrainer(ComponentLoggingMixin, Trainer):
    """transformers.Trainer over a TriggeredLM: logs each loss component, checkpoints the trigger only."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        check_finite(outputs["loss"], self.state.global_step + 1)
        self._record({k: v for k, v in outputs.items() if k != "loss"})
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def _save(self, output_dir=None, state_dict=None):
        # Checkpoints hold the trigger only, never a copy of the frozen model.
        self.accelerator.unwrap_model(self.model).trigger.save(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        loaded = SafetyTrigger.load(f"{resume_from_checkpoint}/{TRIGGER_FILE}")
        with torch.no_grad():
            self.accelerator.unwrap_model(self.model).trigger.vectors.copy_(loaded.vectors)


def stage1_rows(examples: list[Example], fmt: PromptFormat, refusal: str, with_benign: bool) -> EncodedDataset:
    rows = []
    for number, e in enumerate(examples, start=1):
        if e.harmful:
            target = refusal
        elif with_benign and e.harmful is False and e.response:
            target = e.response
        else:
            continue
        encoded = fmt.encode(e.prompt, target, row=number).as_dict()
        encoded["harmful"] = bool(e.harmful)
        rows.append(encoded)
    if not any(r["harmful"] for r in rows):
        raise UserError("the trigger data has no harmful prompts (WildGuardTrain: prompt_harm_label=harmful); "
                        "check --data and its labels")
    return EncodedDataset(rows)


def new_trigger(model, tokenizer, fmt: PromptFormat, config: TriggerConfig) -> SafetyTrigger:
    from ...models import hidden_size, model_name

    init = text_init(model, tokenizer, config.init_text, config.length, config.tied) if config.init == "text" else None
    meta = {"model": model_name(model), "embedding_fingerprint": embedding_fingerprint(model),
            "format": fmt.kind, "anchor": fmt.anchor,
            "dtype": str(model.dtype).replace("torch.", ""), "init": config.init, "refusal": config.refusal}
    return SafetyTrigger(hidden_size(model), config.length, config.tied, init=init, init_std=config.init_std,
                         metadata=meta)


def learn_trigger(config: TriggerConfig, model=None, tokenizer=None, examples: list[Example] | None = None) -> dict:
    """Learn a trigger for `config.model`; writes it to `config.out` and returns the metrics."""
    import dataclasses

    from ...models import default_device, load_model, load_tokenizer

    if not config.out:
        raise UserError("no output folder given: pass --out DIR")
    seed_everything(config.seed)
    examples = examples if examples is not None else load_data(config)
    if config.max_rows and len(examples) > config.max_rows:
        examples = random.Random(config.seed).sample(examples, config.max_rows)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    dataset = stage1_rows(examples, fmt, config.refusal, with_benign=config.benign_weight > 0)
    held_out = held_out_prompts(config, config.seed)

    trigger = new_trigger(model, tokenizer, fmt, config)
    metrics: dict = {"rows": len(dataset), "harmful_rows": sum(r["harmful"] for r in dataset.rows)}

    def measure(with_trigger) -> tuple[float, list[dict]]:
        return refusal_rate(model, tokenizer, held_out, fmt, with_trigger, config.eval_max_new_tokens)

    curve = ValidationCurve(measure, trigger, config.eval_steps if held_out else 0, config.keep == "best")
    if held_out and is_main_process():
        model.to(default_device())
        metrics["refusal_rate_no_trigger"] = measure(None)[0]
        metrics["refusal_rate_initial_trigger"] = curve.record(0)

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapper = TriggeredLM(model, trigger, config)
    # the wrapper handles checkpointing itself (the Trainer cannot enable it on a plain nn.Module)
    train_config = dataclasses.replace(config, gradient_checkpointing=False)
    with output_dir(config.out, keep_partial=config.save_steps > 0, kind="trigger") as work:
        result = train_rows(wrapper, tokenizer, dataset, train_config, work, trainer_class=TriggerTrainer,
                            callbacks=[curve])
        wrapper = result["trainer"].accelerator.unwrap_model(result["model"])
        trained = wrapper.trigger
        metrics.update(result["metrics"])
        metrics["component_history"] = component_history(result["trainer"], COMPONENTS)
        kept_step = metrics["steps"]
        if held_out and is_main_process():  # under torchrun/accelerate, rank 0 evaluates and writes
            # the trained trigger and the whole model as rank 0 holds them after training (also under FSDP)
            curve.trigger = trained
            curve.measure = lambda t: refusal_rate(wrapper.lm, tokenizer, held_out, fmt, t, config.eval_max_new_tokens)
            if curve.last["step"] != metrics["steps"]:
                curve.record(metrics["steps"])
            kept = curve.best or curve.last
            with torch.no_grad():
                trained.vectors.copy_(kept["vectors"])
            kept_step = kept["step"]
            metrics.update(refusal_rate_trigger=kept["rate"], validation_curve=curve.curve, kept_step=kept_step)
            write_jsonl(work / "eval_generations.jsonl", kept["rows"])
        trained.metadata.update({"steps": metrics["steps"], "kept_step": kept_step})
        finish_stage(work, config, metrics, save=trained.save)
    return metrics


def weak_trigger(metrics: dict, config: TriggerConfig) -> str | None:
    """A one-line description of why the trigger is weak (refuses less than min_refusal of the held-out
    prompts), or None when it is strong enough or was not measured."""
    rate = metrics.get("refusal_rate_trigger")
    if rate is None or rate >= config.min_refusal:
        return None
    return (f"the trigger makes the frozen model refuse only {rate:.0%} of the held-out prompts ({config.eval_data}), "
            f"below min_refusal {config.min_refusal:.0%}, and stage 2 can at best copy it: train it longer (epochs, "
            "lr), choose it on validation (eval_steps + keep: best), or set on_weak: warn to go on anyway")
