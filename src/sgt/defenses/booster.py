"""`booster`: Booster (Huang et al., ICLR 2025): attenuate the harmful perturbation.

Make one simulated harmful gradient step do as little as possible: minimise

    f(w)  +  lambda * ( h(w) - h(w - alpha * grad h(w) / ||grad h(w)||) )

f: the alignment loss (refusal CE), h: the harmful loss (CE of harmful answers). As the reference
(git-disl/Booster) the gradient is first-order: grad f(w) + lambda * (grad h(w) - grad h(w')), with
w' the weights after the normalised step (no derivative through the step), on the same harmful batch.
Reference settings: lambda 5, alpha 0.1, LoRA (r 32) on Llama-2-7B, lr 5e-4, 20 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import cfg
from ..methods.defend import (
    DefenseTrainingConfig,
    GradientDefenseTrainer,
    alignment_loss,
    flat_norm,
    lm_loss,
    moved,
)
from . import register
from .trained import TrainedDefense


@dataclass
class BoosterConfig(DefenseTrainingConfig):
    lam: float = cfg(5.0, "lambda: weight of the harmful-loss reduction term.")
    alpha: float = cfg(0.1, "Size of the normalised simulated harmful step.")


def booster_gradients(model, params, inputs: dict, config: BoosterConfig) -> tuple[list, dict]:
    harmful = inputs["harmful"]
    h, _ = lm_loss(model, harmful)
    g = torch.autograd.grad(h, params, allow_unused=True)
    g = [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]
    step = config.alpha / (float(flat_norm(g)) + 1e-7)
    with moved(params, g, -step):  # w' = w - alpha * g / ||g||
        h_after, _ = lm_loss(model, harmful)
        g_after = torch.autograd.grad(h_after, params, allow_unused=True)
    f, parts = alignment_loss(model, inputs, config)
    grad_f = torch.autograd.grad(f, params, allow_unused=True)
    grads = [(gf if gf is not None else 0) + config.lam * (a - (b if b is not None else 0))
             for gf, a, b in zip(grad_f, g, g_after)]
    loss = f + config.lam * (h - h_after)
    return grads, {"loss": loss.detach(), **parts, "harmful_ce": h.detach(), "harmful_ce_after_step": h_after.detach()}


class BoosterTrainer(GradientDefenseTrainer):
    def gradients(self, model, inputs):
        return booster_gradients(model, self.trainable(), inputs, self.defense_config)


@register
class Booster(TrainedDefense):
    kind = "booster"
    summary = "Booster (attenuate a simulated harmful step)"
    settings_class = BoosterConfig
    trainer_class = BoosterTrainer
