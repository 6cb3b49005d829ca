"""`tar`: Tamper-Resistant Safeguards (Tamirisa et al., ICLR 2025), first-order.

Train so that a simulated fine-tuning attack leaves the model bad at the harmful task, while a retain
loss keeps it useful. Per outer step (as the reference rishub-tamirisa/tamper-resistance):
  1. from the current weights w, run K inner steps of an attacker (a fresh AdamW, fine-tuning on harmful
     answers); every `tr_every` steps, at the attacked weights w_k, take the gradient of the
     tamper-resistance loss on a held-out harmful batch and accumulate it (first order: applied to w),
     weighted tr_scale * exp(0.0625 * (k - (K - 1))) / number of terms;
  2. restore w and add the gradient of the retain loss: LM cross-entropy on benign answers plus the mean
     L2 distance of its hidden states to the original model's (all layers);
  3. one outer optimiser step on the sum.
Tamper-resistance loss: the negative entropy of the model's next-token distribution on the harmful
answers (minimising it keeps the attacked model uncertain about harmful text). Reference settings:
K 64, inner lr sampled from {2e-6, 2e-5, 4e-5}, tr_scale 4, outer lr 2e-5, 750 steps on Llama-3-8B; the
reference's harmful-refusal variant uses a DPO tamper loss instead. Our K defaults to 4 (a laptop).
"""

from __future__ import annotations

import copy
import math
import random
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..config import cfg
from ..data.formats import IGNORE_INDEX
from ..methods.defend import DefenseTrainingConfig, GradientDefenseTrainer, lm_loss
from . import register
from .trained import TrainedDefense


@dataclass
class TarConfig(DefenseTrainingConfig):
    inner_steps: int = cfg(4, "K: steps of the simulated attack per outer step (reference: 64).")
    inner_lr: float = cfg(2e-5, "Learning rate of the simulated attack (reference: sampled from 2e-6, 2e-5, 4e-5).")
    tr_every: int = cfg(1, "Take the tamper-resistance gradient every this many inner steps (reference: 4).")
    tr_scale: float = cfg(4.0, "Weight of the tamper-resistance gradients.")
    retain_rep_weight: float = cfg(1.0, "Weight of the hidden-state distance in the retain loss.")


def negative_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the positions predicting answer tokens of sum p log p (the negative entropy)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    log_p = torch.log_softmax(logits[mask].float(), dim=-1)
    return (log_p.exp() * log_p).sum(-1).mean()


def retain_objective(model, original, batch: dict, weight: float) -> tuple[torch.Tensor, dict]:
    ce, outputs = lm_loss(model, batch, output_hidden_states=True)
    with torch.no_grad():
        reference = original(batch)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    distance = sum(((h.float() - h0.float()) * mask).norm(dim=-1).sum() / mask.sum()
                   for h, h0 in zip(outputs.hidden_states, reference)) / len(reference)
    return ce + weight * distance, {"retain_ce": ce.detach(), "retain_distance": distance.detach()}


class TarTrainer(GradientDefenseTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        self.frozen = None if hasattr(model, "disable_adapter") else \
            copy.deepcopy(model).requires_grad_(False).eval().to(self.accelerator.device)
        self.rng = random.Random(self.args.seed)

    def original(self, batch: dict):
        """Hidden states of the model as it was before this defense (adapters disabled, or a frozen copy)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        source = self.frozen or unwrapped
        with unwrapped.disable_adapter() if self.frozen is None else nullcontext():
            return source(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          output_hidden_states=True, use_cache=False).hidden_states

    def attack_batches(self, k: int) -> list[dict]:
        """k batches of harmful rows for the simulated attack, drawn from the harmful stream."""
        rows = self.train_dataset.rows["harmful"]
        size = self.args.per_device_train_batch_size
        from ..data.collate import pad_batch

        batches = []
        for _ in range(k):
            picked = [rows[self.rng.randrange(len(rows))] for _ in range(size)]
            batch = pad_batch(picked, self.data_collator.pad_id, "right")
            batches.append({key: value.to(self.args.device) for key, value in batch.items()})
        return batches

    def gradients(self, model, inputs):
        return tar_gradients(model, self.trainable(), inputs, self.defense_config, self.attack_batches,
                             self.original)


def tar_gradients(model, params, inputs: dict, config: TarConfig, attack_batches, original) -> tuple[list, dict]:
    saved = [p.detach().clone() for p in params]
    accumulated = [None if p.grad is None else p.grad.clone() for p in params]  # gradient accumulation so far
    attacker = torch.optim.AdamW(params, lr=config.inner_lr)  # a fresh attacker every outer step
    tamper = [torch.zeros_like(p) for p in params]
    held_out = inputs["harmful"]
    terms, last_tr = 0, torch.tensor(0.0)
    k_total = config.inner_steps
    for k, batch in enumerate(attack_batches(k_total)):
        attacker.zero_grad(set_to_none=True)
        loss, _ = lm_loss(model, batch)
        loss.backward()
        attacker.step()
        if (k + 1) % config.tr_every == 0:
            outputs = model(input_ids=held_out["input_ids"], attention_mask=held_out["attention_mask"], use_cache=False)
            tr = negative_entropy(outputs.logits, held_out["labels"])
            weight = math.exp(0.0625 * (k - (k_total - 1)))
            for acc, g in zip(tamper, torch.autograd.grad(tr, params, allow_unused=True)):
                if g is not None:
                    acc.add_(g, alpha=weight)
            terms += 1
            last_tr = tr.detach()
    with torch.no_grad():  # back to w, with the outer gradients accumulated before this step
        for p, s, g in zip(params, saved, accumulated):
            p.copy_(s)
            p.grad = g
    retain, parts = retain_objective(model, original, inputs["benign"], config.retain_rep_weight)
    grads = torch.autograd.grad(retain, params, allow_unused=True)
    scale = config.tr_scale / max(1, terms)
    update = [(g if g is not None else torch.zeros_like(t)) + scale * t for g, t in zip(grads, tamper)]
    return update, {"loss": (retain + config.tr_scale * last_tr).detach(), **parts, "tamper_negative_entropy": last_tr}


@register
class Tar(TrainedDefense):
    kind = "tar"
    summary = "TAR (tamper resistance against simulated attacks, first order)"
    settings_class = TarConfig
    trainer_class = TarTrainer
