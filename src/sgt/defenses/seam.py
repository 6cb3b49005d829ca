"""`seam`: SEAM, self-destructive alignment (Wang, Zhu & Wang, 2025, "Self-Destructive Language Model").

Couple harmful and benign fine-tuning so that an attack which removes the refusals also destroys
benign capability: make the gradient of harmful fine-tuning (g_a) point AGAINST the gradient of
benign fine-tuning (g_b). As the reference (ZJUWYH/seam), the update is

    grad L_ul  +  alpha * grad L_up  +  beta * grad cos(g_a, g_b)

L_ul: RepNoise's bounded ascent on harmful answers, -log(1 + CE_avg(harmful)); L_up: refusal CE;
g_a = grad CE(harmful answers), g_b = grad CE(benign answers). grad cos is estimated without a Hessian,
by finite differences (c = cos(g_a, g_b), ^ = unit vector):
    g_a' = g_a at w + eps * (g_b^ - c g_a^),   g_b' = g_b at w + eps * (g_a^ - c g_b^)
    grad cos ~ ((g_a' - g_a) / ||g_a|| + (g_b' - g_b) / ||g_b||) / eps
Reference settings: alpha 1, beta 0.01, eps 1e-3, full fine-tuning of Llama-2-7B-chat, lr 2e-5, 1 epoch,
no gradient clipping. It is the one design aimed at the capability-bounded worst case.
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
from .repnoise import averaged_harmful_ce
from .trained import TrainedDefense


@dataclass
class SeamConfig(DefenseTrainingConfig):
    alpha: float = cfg(1.0, "Weight of the refusal (utility-preserving alignment) loss L_up.")
    beta: float = cfg(0.01, "Weight of the gradient-coupling (self-destruction) term.")
    eps: float = cfg(1e-3, "Finite-difference step of the Hessian-free estimate.")
    max_grad_norm: float = cfg(0.0, "Gradient clipping norm (0: none, as the reference).")


def _grad(loss, params):
    return [torch.zeros_like(p) if g is None else g for p, g in
            zip(params, torch.autograd.grad(loss, params, allow_unused=True))]


def coupling_gradient(model, params, harmful: dict, benign: dict, eps: float) -> tuple[list, torch.Tensor]:
    """Finite-difference estimate of grad cos(g_a, g_b), and the cosine itself."""
    g_a = _grad(lm_loss(model, harmful)[0], params)
    g_b = _grad(lm_loss(model, benign)[0], params)
    norm_a, norm_b = flat_norm(g_a), flat_norm(g_b)
    cos = sum((a.double() * b.double()).sum() for a, b in zip(g_a, g_b)) / (norm_a * norm_b + 1e-12)
    unit_a = [a / (norm_a + 1e-12) for a in g_a]
    unit_b = [b / (norm_b + 1e-12) for b in g_b]
    towards_b = [b - cos * a for a, b in zip(unit_a, unit_b)]
    towards_a = [a - cos * b for a, b in zip(unit_a, unit_b)]
    with moved(params, towards_b, eps):
        g_a_moved = _grad(lm_loss(model, harmful)[0], params)
    with moved(params, towards_a, eps):
        g_b_moved = _grad(lm_loss(model, benign)[0], params)
    estimate = [((am - a) / (norm_a + 1e-12) + (bm - b) / (norm_b + 1e-12)) / eps
                for a, am, b, bm in zip(g_a, g_a_moved, g_b, g_b_moved)]
    return estimate, cos.detach()


def seam_gradients(model, params, inputs: dict, config: SeamConfig) -> tuple[list, dict]:
    harmful = inputs["harmful"]
    outputs = model(input_ids=harmful["input_ids"], attention_mask=harmful["attention_mask"],
                    output_hidden_states=True, use_cache=False)
    harmful_ce = averaged_harmful_ce(model, outputs, harmful["labels"])
    unlearn = -torch.log1p(harmful_ce)
    up, parts = alignment_loss(model, inputs, config)
    base = _grad(unlearn + config.alpha * up, params)
    coupling, cos = coupling_gradient(model, params, harmful, inputs["benign"], config.eps)
    grads = [g + config.beta * c for g, c in zip(base, coupling)]
    loss = unlearn + config.alpha * up + config.beta * cos
    return grads, {"loss": loss.detach(), **parts, "harmful_ce": harmful_ce.detach(), "grad_cosine": cos}


class SeamTrainer(GradientDefenseTrainer):
    def gradients(self, model, inputs):
        return seam_gradients(model, self.trainable(), inputs, self.defense_config)


@register
class Seam(TrainedDefense):
    kind = "seam"
    summary = "SEAM (couple harmful and benign gradients: self-destruct)"
    settings_class = SeamConfig
    trainer_class = SeamTrainer
