"""Stage 1: learn the Safety Guidance Trigger on the frozen model (seed script 3.1).

Only the trigger is trained. On harmful prompts the loss is
    CE(refusal target | prompt with trigger)                      (response tokens)
  + w_c * mean_d KL( p_trigger (fixed) || p_(trigger + eps_d) )   eps_d ~ N(0, noise_std^2), d = 1..draws
and, optionally, on benign prompts w_b * KL( p_no_trigger || p_trigger ) so that the trigger leaves
benign answers unchanged (not in the reference; off by default).

    sgt trigger --model M --data allenai/wildguardmix --out runs/trigger
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import torch
from torch import nn

from .config import cfg, save_config
from .data.formats import FORMATS, PromptFormat
from .data.sources import DataFields, Example, load_data, load_examples
from .errors import UserError
from .finetune import REFUSAL
from .losses import masked_kl, predicting_mask, response_ce
from .training import EncodedDataset, OptimFields, check_finite, train_rows, validate_optim
from .trigger import SafetyTrigger, text_init
from .utils import atomic_write_json, is_main_process, output_dir, seed_everything, write_jsonl


@dataclass
class HeldOutFields:
    """Held-out harmful prompts on which a stage reports its refusal rate (keyword judge)."""

    eval_data: str = cfg("", "Held-out harmful prompts for the refusal rate before/after the stage (empty: skip).")
    eval_split: str | None = cfg(None, "Split of eval_data (hub datasets).")
    eval_n: int = cfg(200, "Number of eval prompts used (sampled with seed).")
    eval_max_new_tokens: int = cfg(32, "Tokens generated per eval prompt.")


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
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    # reference optimisation defaults
    lr: float = cfg(1e-3, "Learning rate (AdamW) of the trigger.")
    batch_size: int = cfg(4, "Per-device batch size.")
    max_length: int = cfg(1024, "Maximum tokens per row.")
    scheduler: str = cfg("constant", "Learning-rate schedule.")

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

    def logits(self, embeds, attention_mask, trigger_pos, noise_std: float = 0.0, labels=None):
        embeds, mask, labels = self.trigger.insert(embeds, attention_mask, trigger_pos, labels, noise_std)
        return self.lm(inputs_embeds=embeds, attention_mask=mask).logits, labels

    def forward(self, input_ids, attention_mask, labels, trigger_pos, harmful):
        c = self.config
        embeds = self.lm.get_input_embeddings()(input_ids)
        logits, labels_t = self.logits(embeds, attention_mask, trigger_pos, labels=labels)
        parts = {"refusal_ce": response_ce(logits, labels_t, rows=harmful)}
        loss = parts["refusal_ce"]
        response = predicting_mask(labels_t) & harmful.unsqueeze(1)
        if c.consistency_weight and c.noise_draws:
            kl = sum(masked_kl(logits.detach(), self.logits(embeds, attention_mask, trigger_pos, c.noise_std)[0],
                               response, c.temperature) for _ in range(c.noise_draws)) / c.noise_draws
            parts["consistency_kl"] = kl
            loss = loss + c.consistency_weight * kl
        if c.benign_weight and (~harmful).any():
            with torch.no_grad():
                plain = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
            benign = predicting_mask(labels) & ~harmful.unsqueeze(1)
            # Compare each benign position with and without the trigger (trigger positions cut out).
            from .trigger import remove_trigger_positions

            kept = remove_trigger_positions(logits, trigger_pos, self.trigger.length)
            parts["benign_kl"] = masked_kl(plain, kept, benign, c.temperature)
            loss = loss + c.benign_weight * parts["benign_kl"]
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}


class ComponentLoggingMixin:
    """Adds running means of extra loss components to the Trainer's logs (TRL style)."""

    loss_is_scaled_for_ga = False  # our losses are batch means: let the Trainer divide by GA steps

    def _record(self, parts: dict) -> None:
        store = self.__dict__.setdefault("_components", {})
        for name, value in parts.items():
            store.setdefault(name, []).append(float(value))

    def log(self, logs: dict, *args, **kwargs) -> None:
        store = self.__dict__.get("_components", {})
        if "loss" in logs:
            for name, values in store.items():
                if values:
                    logs[name] = round(sum(values) / len(values), 5)
            store.clear()
        super().log(logs, *args, **kwargs)


def _make_trigger_trainer():
    from transformers import Trainer

    class TriggerTrainer(ComponentLoggingMixin, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            check_finite(outputs["loss"], self.state.global_step + 1)
            self._record({k: v for k, v in outputs.items() if k != "loss"})
            return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

        def _save(self, output_dir=None, state_dict=None):
            # Checkpoints hold the trigger only, never a copy of the frozen model.
            self.accelerator.unwrap_model(self.model).trigger.save(output_dir or self.args.output_dir)

    return TriggerTrainer


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
    from .models import hidden_size, model_name

    init = text_init(model, tokenizer, config.init_text, config.length, config.tied) if config.init == "text" else None
    meta = {"model": model_name(model), "format": fmt.kind, "anchor": fmt.anchor,
            "dtype": str(model.dtype).replace("torch.", ""), "init": config.init, "refusal": config.refusal}
    return SafetyTrigger(hidden_size(model), config.length, config.tied, init=init, init_std=config.init_std,
                         metadata=meta)


def refusal_rate(model, tokenizer, prompts: list[str], fmt: PromptFormat, trigger=None,
                 max_new_tokens: int = 32, batch_size: int = 32) -> tuple[float, list[dict]]:
    """Fraction of prompts the model refuses (keyword judge), with or without the trigger."""
    from .generate import generate
    from .judges.keyword import KeywordJudge

    responses = generate(model, tokenizer, prompts, fmt, trigger=trigger, batch_size=batch_size,
                         max_new_tokens=max_new_tokens)
    judged = KeywordJudge().judge(list(zip(prompts, responses)))
    rows = [{"prompt": p, "response": r, "refused": not j.harmful} for p, r, j in zip(prompts, responses, judged)]
    return sum(r["refused"] for r in rows) / max(1, len(rows)), rows


def eval_prompts(data: str, split: str | None, n: int, seed: int) -> list[str]:
    import random

    examples = load_examples(data, split=split)
    prompts = [e.prompt for e in examples if e.harmful is not False]
    if n and len(prompts) > n:
        prompts = random.Random(seed).sample(prompts, n)
    return prompts


def learn_trigger(config: TriggerConfig, model=None, tokenizer=None, examples: list[Example] | None = None) -> dict:
    """Learn a trigger for `config.model`; writes it to `config.out` and returns the metrics."""
    import random

    from .models import default_device, load_model, load_tokenizer

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
    held_out = eval_prompts(config.eval_data, config.eval_split, config.eval_n, config.seed) if config.eval_data else []

    trigger = new_trigger(model, tokenizer, fmt, config)
    metrics: dict = {"rows": len(dataset), "harmful_rows": sum(r["harmful"] for r in dataset.rows)}
    if held_out and is_main_process():
        model.to(default_device())
        metrics["refusal_rate_no_trigger"], _ = refusal_rate(model, tokenizer, held_out, fmt, None, config.eval_max_new_tokens)
        metrics["refusal_rate_initial_trigger"], _ = refusal_rate(model, tokenizer, held_out, fmt, trigger, config.eval_max_new_tokens)

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapper = TriggeredLM(model, trigger, config)
    train_config = _without_checkpointing(config)  # the wrapper handles it (the Trainer cannot)
    with output_dir(config.out) as work:
        result = train_rows(wrapper, tokenizer, dataset, train_config, work, trainer_class=_make_trigger_trainer())
        trained = result["trainer"].accelerator.unwrap_model(result["model"]).trigger
        metrics.update({k: v for k, v in result["metrics"].items()})
        metrics["component_history"] = [
            {k: v for k, v in r.items() if k in ("step", "refusal_ce", "consistency_kl", "benign_kl")}
            for r in result["trainer"].state.log_history if "refusal_ce" in r]
        if is_main_process():  # under torchrun/accelerate, rank 0 evaluates and writes
            if held_out:
                rate, rows = refusal_rate(model, tokenizer, held_out, fmt, trained, config.eval_max_new_tokens)
                metrics["refusal_rate_trigger"] = rate
                write_jsonl(work / "eval_generations.jsonl", rows)
            trained.metadata.update({"steps": metrics["steps"]})
            trained.save(work)
            save_config(config, work)
            atomic_write_json(work / "metrics.json", metrics)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return metrics


def _without_checkpointing(config: TriggerConfig) -> TriggerConfig:
    import dataclasses

    return dataclasses.replace(config, gradient_checkpointing=False) if config.gradient_checkpointing else config
