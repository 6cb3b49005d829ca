"""Stage 2: trigger-guided representation alignment (seed script 3.2).

Teacher: the frozen initial model WITH the trigger (no gradients). Student: the model being trained,
WITHOUT the trigger. For every selected layer l (hidden_states[l], l = 1..n_layers: the outputs of
the transformer blocks, not the embeddings) and every aligned position (`alignment_objective`):
    harmful rows: attract  = mean distance(student, teacher)
    benign rows:  repel    = f(mean distance),  f = log(1 + 1/(d + eps)) by default
    layer term            = alpha * (attract + beta * repel)
    loss = ce_weight * CE(benign responses) + mean over layers of the layer term
           (+ harmful_ce_weight * CE(refusal on harmful rows), not in the reference)
           (+ with attack_steps: attack_weight * alpha * attract at the weights after a simulated attack,
            first order; not in the reference)
Logged per component: attract, repel (the distances, before alpha and beta), benign_ce, ..., and
attract_after_attack (the same distance as attract, at the attacked weights).
The trigger positions are cut out of the teacher's states so positions line up with the student's.
Harmful rows are trained toward the refusal target, benign rows toward their own response.

Teacher without a second copy of the weights: with LoRA the teacher pass runs with the adapters
disabled; for full fine-tuning a frozen copy of the initial weights is kept (no gradients, no
optimiser state: +1x weights, measured in benchmarks/stage2_overhead.py). The teacher pass runs the
decoder only (no LM head), on the accelerator's device.

    sgt align --model M --trigger runs/trigger --data allenai/wildguardmix --out runs/aligned
"""

from __future__ import annotations

import copy
import dataclasses
import random
from contextlib import nullcontext

import torch
from transformers import Trainer

from ...data.collate import pad_batch
from ...data.formats import PromptFormat
from ...data.sources import Example, load_data, sample_mix
from ...errors import UserError
from ...losses import kl_rows, predicting_mask, response_ce
from ...refusal import held_out_prompts, refusal_rate
from ...training import (
    ComponentLoggingMixin,
    EncodedDataset,
    apply_lora,
    check_finite,
    component_history,
    finish_stage,
    save_model,
    train_rows,
)
from ...trigger import SafetyTrigger, remove_trigger_positions
from ...utils import is_main_process, output_dir, seed_everything, write_jsonl
from .config import AlignConfig

COMPONENTS = ("attract", "repel", "benign_ce", "harmful_ce", "distill_kl", "attract_after_attack")


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------


def position_mask(labels: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, L) bool mask of the positions whose hidden states are aligned."""
    response = labels != -100
    if mode == "response":
        return response
    if mode == "predicting":
        return response | predicting_mask(labels)
    return attention_mask.bool()


def state_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, L) distance per position: mean squared error over the hidden dim, the same relative to the
    teacher's squared norm (real models have layers with activations 10-100x larger than others, which
    would otherwise dominate the layer mean), or 1 - cosine."""
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        return (student - teacher).pow(2).mean(-1)
    if kind == "relative":
        return (student - teacher).pow(2).sum(-1) / teacher.pow(2).sum(-1).clamp_min(1e-6)
    return 1 - torch.nn.functional.cosine_similarity(student, teacher, dim=-1)


def repel_term(d: torch.Tensor, kind: str, margin: float, eps: float) -> torch.Tensor:
    """Large when benign states come close to the trigger-induced ones; decreasing in d."""
    if kind == "log":
        return torch.log1p(1 / (d + eps))
    if kind == "hinge":
        return torch.relu(margin - d)
    if kind == "inverse":
        return 1 / (d + eps)
    if kind == "inverse_sqrt":
        return 1 / torch.sqrt(d + eps)
    return d * 0.0


def benign_distance(d: torch.Tensor, benign_mask: torch.Tensor, reduce: str) -> torch.Tensor:
    """The benign distance the repel function sees: one per benign row (its masked tokens' mean; the
    reference) or one pooled over every benign token."""
    if reduce == "token":
        return d[benign_mask].mean()
    counts = benign_mask.sum(1)
    rows = counts > 0
    return (d * benign_mask).sum(1)[rows] / counts[rows]


def alignment_loss(student_states, teacher_states, mask: torch.Tensor, harmful: torch.Tensor,
                   config: AlignConfig) -> tuple[torch.Tensor, dict]:
    """Layer-averaged alpha * (attract + beta * repel); returns the loss and its parts (detached)."""
    harm_mask = mask & harmful.unsqueeze(1)
    benign_mask = mask & ~harmful.unsqueeze(1)
    total, attracts, repels = 0.0, [], []
    for student, teacher in zip(student_states, teacher_states):
        d = state_distance(student, teacher, config.distance)
        attract = d[harm_mask].mean() if harm_mask.any() else d.sum() * 0.0
        if benign_mask.any() and config.repel != "none":
            repel = repel_term(benign_distance(d, benign_mask, config.repel_reduce), config.repel,
                               config.repel_margin, config.repel_eps).mean()
        else:
            repel = d.sum() * 0.0
        total = total + config.alpha * (attract + config.beta * repel)
        attracts.append(attract.detach())
        repels.append(repel.detach())
    n = len(student_states)
    return total / n, {"attract": sum(attracts) / n, "repel": sum(repels) / n}


def distillation_positions(labels: torch.Tensor, attention_mask: torch.Tensor, harmful: torch.Tensor,
                           config: AlignConfig) -> torch.Tensor:
    """(B, L) bool: where the student's next-token distribution is matched to the teacher's: the aligned
    positions of the harmful rows."""
    return position_mask(labels, attention_mask, config.positions) & harmful.unsqueeze(1)


def alignment_objective(logits: torch.Tensor, student_states, teacher_states, labels: torch.Tensor,
                        attention_mask: torch.Tensor, harmful: torch.Tensor, config: AlignConfig,
                        teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The whole stage-2 loss of one batch:
    ce_weight * CE(benign) + layer mean of alpha * (attract + beta * repel) [+ harmful_ce_weight * CE(harmful)]
    [+ distill_weight * KL(teacher || student)]; `teacher_logits` (N, V) are the teacher's logits at the
    N `distillation_positions`, in row-major order (needed only when distill_weight > 0)."""
    aligned = position_mask(labels, attention_mask, config.positions)
    align_loss, parts = alignment_loss(student_states, teacher_states, aligned, harmful, config)
    ce = response_ce(logits, labels, rows=~harmful)
    loss = config.ce_weight * ce + align_loss
    parts["benign_ce"] = ce.detach()
    if config.harmful_ce_weight:
        harmful_ce = response_ce(logits, labels, rows=harmful)
        loss = loss + config.harmful_ce_weight * harmful_ce
        parts["harmful_ce"] = harmful_ce.detach()
    if config.distill_weight:
        at = distillation_positions(labels, attention_mask, harmful, config)
        distill = kl_rows(teacher_logits, logits[at]) if at.any() else logits.sum() * 0.0
        loss = loss + config.distill_weight * distill
        parts["distill_kl"] = distill.detach()
    return loss, parts


def resolve_layers(requested: list[int], n_layers: int) -> list[int]:
    """hidden_states indices: 1..n_layers (0 is the embedding output and is never aligned)."""
    layers = requested or list(range(1, n_layers + 1))
    bad = [layer for layer in layers if not 1 <= layer <= n_layers]
    if bad:
        raise UserError(f"layers {bad} are out of range: this model has transformer layers 1..{n_layers}")
    return sorted(set(layers))


def _decoder(model):
    """The transformer body without the LM head (the teacher needs no logits), if the model exposes it."""
    get = getattr(model, "get_decoder", None)
    try:
        decoder = get() if get else None
    except (AttributeError, NotImplementedError):
        decoder = None
    return decoder if decoder is not None else model


class AlignmentTrainer(ComponentLoggingMixin, Trainer):
    """transformers.Trainer whose loss is the stage-2 objective (see the module docstring).

    `teacher=None` means LoRA: the teacher is the trained model with its adapters disabled.
    """

    def __init__(self, *args, trigger: SafetyTrigger, align: AlignConfig, layers: list[int],
                 teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Placed here, once accelerate exists: under a multi-GPU launch each rank holds its own teacher.
        self.trigger = trigger.requires_grad_(False).to(self.accelerator.device)
        self.teacher = teacher.to(self.accelerator.device) if teacher is not None else None
        self.align = align
        self.layers = layers

    @torch.no_grad()
    def teacher_states(self, model, input_ids, attention_mask, trigger_pos,
                       logits_at: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Hidden states of the frozen model with the trigger inserted (trigger positions removed), and,
        when `logits_at` (a (B, L) mask) is given, its logits at those positions only (the LM head on a
        few positions, never on the whole batch)."""
        unwrapped = self.accelerator.unwrap_model(model)
        teacher = self.teacher if self.teacher is not None else unwrapped
        disabled = unwrapped.disable_adapter() if self.teacher is None else nullcontext()
        with disabled:
            # the reference read the teacher's input through the student's current embedding table
            source = unwrapped if self.align.teacher_embeddings == "student" else teacher
            embeds = source.get_input_embeddings()(input_ids)
            embeds, mask, _ = self.trigger.insert(embeds, attention_mask, trigger_pos)
            lm = teacher.get_base_model() if self.teacher is None else teacher
            hidden = _decoder(lm)(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True,
                                  use_cache=False).hidden_states
            logits = None
            if logits_at is not None:  # the last hidden state is the final-normed one the LM head reads
                last = remove_trigger_positions(hidden[-1], trigger_pos, self.trigger.length)
                logits = lm.get_output_embeddings()(last[logits_at])
        states = [remove_trigger_positions(hidden[layer], trigger_pos, self.trigger.length) for layer in self.layers]
        return states, logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, mask, labels, harmful = inputs["input_ids"], inputs["attention_mask"], inputs["labels"], inputs["harmful"]
        distill_at = distillation_positions(labels, mask, harmful, self.align) if self.align.distill_weight else None
        teacher, teacher_logits = self.teacher_states(model, ids, mask, inputs["trigger_pos"], distill_at)
        outputs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        student = [outputs.hidden_states[layer] for layer in self.layers]
        loss, parts = alignment_objective(outputs.logits, student, teacher, labels, mask, harmful, self.align,
                                          teacher_logits)
        check_finite(loss, self.state.global_step + 1)
        self._record(parts)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.align.attack_steps and inputs["harmful"].any():
            self._record({"attract_after_attack": self.anchor_after_attack(model, self._prepare_inputs(inputs))})
        return loss

    def anchor_after_attack(self, model, inputs: dict) -> torch.Tensor:
        """Add the gradient of the anchor measured after a simulated attack (first order: taken at the
        attacked weights, applied to the current ones); the weights and gradients so far are restored.

        The anchor is the layer term's attract part, alpha * attract, as in the loss (alpha weighs the
        alignment wherever it is measured), times attack_weight: the gradient added is
        attack_weight * alpha * d(attract)/d(weights) at the attacked weights. Returned (and logged as
        attract_after_attack): attract itself, the distance the logged `attract` is at the current weights."""
        if self.args.world_size > 1:
            raise UserError("stage-2 attack_steps computes gradients by hand and runs in one process")
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        accumulated = [None if p.grad is None else p.grad.clone() for p in params]
        attacker = torch.optim.AdamW(params, lr=self.align.attack_lr)
        for batch in self.attack_batches():
            attacker.zero_grad(set_to_none=True)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
            response_ce(out.logits, batch["labels"]).backward()
            attacker.step()
        ids, mask, labels, harmful = inputs["input_ids"], inputs["attention_mask"], inputs["labels"], inputs["harmful"]
        teacher, _ = self.teacher_states(model, ids, mask, inputs["trigger_pos"])
        outputs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        aligned = position_mask(labels, mask, self.align.positions) & harmful.unsqueeze(1)
        anchor, parts = alignment_loss([outputs.hidden_states[layer] for layer in self.layers], teacher, aligned,
                                       harmful, dataclasses.replace(self.align, repel="none"))
        grads = torch.autograd.grad(anchor, params, allow_unused=True)
        scale = self.align.attack_weight / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        with torch.no_grad():
            for p, s, g, extra in zip(params, saved, accumulated, grads):
                p.copy_(s)
                p.grad = g
                if extra is not None:
                    p.grad = extra * scale if p.grad is None else p.grad + extra * scale
        return parts["attract"]

    def attack_batches(self) -> list[dict]:
        """`attack_steps` batches of harmful prompt + harmful answer rows (seeded draws)."""
        rows = self.train_dataset.attack_rows
        if not rows:
            raise UserError("attack_steps needs harmful prompts with harmful responses in the alignment data "
                            "(WildGuard: response_harm_label=harmful)")
        rng = self.__dict__.setdefault("_attack_rng", random.Random(self.args.seed))
        size = self.args.per_device_train_batch_size
        batches = []
        for _ in range(self.align.attack_steps):
            picked = [rows[rng.randrange(len(rows))] for _ in range(size)]
            batch = pad_batch(picked, self.data_collator.pad_id, "right")
            batches.append({k: v.to(self.args.device) for k, v in batch.items()})
        return batches


# ---------------------------------------------------------------------------------------------
# Data and the command
# ---------------------------------------------------------------------------------------------


def stage2_rows(examples: list[Example], fmt: PromptFormat, refusal: str) -> EncodedDataset:
    """prompt + target rows: the refusal for harmful prompts, the dataset's answer for benign ones. The
    harmful prompts with harmful answers ride along as `attack_rows` (for attack_steps)."""
    rows = []
    for number, e in enumerate(examples, start=1):
        target = refusal if e.harmful else e.response
        if not target:
            continue  # a benign prompt without a response has nothing to preserve
        encoded = fmt.encode(e.prompt, target, row=number).as_dict()
        encoded["harmful"] = bool(e.harmful)
        rows.append(encoded)
    if not rows:
        raise UserError("no usable alignment rows: the data needs harmful prompts and benign prompts with responses")
    dataset = EncodedDataset(rows)
    dataset.attack_rows = [fmt.encode(e.prompt, e.response).as_dict() for e in examples
                           if e.harmful and e.response and e.response_harmful]
    return dataset


def align_model(config: AlignConfig, model=None, tokenizer=None, examples: list[Example] | None = None,
                trigger: SafetyTrigger | None = None) -> dict:
    """Run stage 2; writes the aligned checkpoint to `config.out` and returns the metrics."""
    from ...models import load_model, load_tokenizer, num_layers

    if not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if trigger is None and not config.trigger:
        raise UserError("no trigger given: pass --trigger DIR (learn one with `sgt trigger`)")
    seed_everything(config.seed)
    examples = examples if examples is not None else load_data(config)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    trigger = trigger or SafetyTrigger.load(config.trigger, model=model, fmt=config.format, force=config.force_trigger)
    trigger.check_model(model, force=config.force_trigger)
    layers = resolve_layers(config.layers, num_layers(model))
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    sample = sample_mix(examples, config.rows if config.rows and config.rows < len(examples) else None,
                        config.harm_ratio, config.seed, name=config.data or "alignment data")
    dataset = stage2_rows(sample, fmt, config.refusal)
    held_out = held_out_prompts(config, config.seed)

    if config.lora:
        teacher = None
        model = apply_lora(model, config)
    else:
        teacher = copy.deepcopy(model).requires_grad_(False).eval()
    metrics: dict = {"rows": len(dataset), "harmful_rows": sum(r["harmful"] for r in dataset.rows),
                     "layers": layers, "teacher": "adapters disabled" if teacher is None else "frozen copy"}
    with output_dir(config.out, keep_partial=config.save_steps > 0, kind="model") as work:
        result = train_rows(model, tokenizer, dataset, config, work, trainer_class=AlignmentTrainer,
                            trigger=trigger, align=config, layers=layers, teacher=teacher)
        trainer = result["trainer"]
        metrics.update(result["metrics"])
        metrics["component_history"] = component_history(trainer, COMPONENTS)
        aligned = trainer.accelerator.unwrap_model(result["model"])
        if held_out and is_main_process():
            rate, rows = refusal_rate(aligned, tokenizer, held_out, fmt, None, config.eval_max_new_tokens)
            metrics["refusal_rate_no_trigger"] = rate
            write_jsonl(work / "eval_generations.jsonl", rows)
        finish_stage(work, config, metrics, save=lambda folder: save_model(aligned, tokenizer, folder,
                                                                           merge_lora=config.merge_lora))
    return metrics
