"""`vaccine`: Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment.

Align the model so that its answers survive a worst-case, norm-bounded perturbation of its hidden
states (the "embedding drift" a harmful fine-tuning causes). As the reference (git-disl/Vaccine),
per step:
  1. forward + backward of the alignment loss, recording the gradient w.r.t. each layer's output;
  2. perturbation of layer l: eps_l = rho * grad_l / ||(grad_1, ..., grad_L)|| (one norm over all layers);
  3. a second forward pass with eps_l added to layer l's output (a constant), whose gradient is the update.
The reference perturbs the attention modules' outputs; we perturb each decoder layer's output (found
as `get_decoder().layers`, no model-specific module names). Reference settings: rho 2, LoRA (r 8) on
Llama-2-7B, lr 1e-3, 50 epochs; alignment data only (safe answers to harmful prompts).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..config import cfg
from ..errors import UserError
from ..methods.defend import DefenseTrainingConfig, GradientDefenseTrainer, alignment_loss, flat_norm
from . import register
from .trained import TrainedDefense


@dataclass
class VaccineConfig(DefenseTrainingConfig):
    rho: float = cfg(2.0, "Norm of the hidden-state perturbation (over all layers together).")


def decoder_layers(model) -> list[torch.nn.Module]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"vaccine needs the decoder layers of {type(model).__name__} (get_decoder().layers)")
    return list(layers)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


@contextmanager
def layer_hooks(layers, hook):
    handles = [layer.register_forward_hook(lambda module, args, output, i=i: hook(i, output))
               for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def vaccine_gradients(model, params, inputs: dict, config: VaccineConfig) -> tuple[list, dict]:
    layers = decoder_layers(model.get_base_model() if hasattr(model, "get_base_model") else model)
    # The alignment loss may run several forward passes (refusal and benign streams): each layer output
    # is kept per call, and the k-th call of a layer in the perturbed pass gets the k-th perturbation.
    outputs: dict[int, list[torch.Tensor]] = defaultdict(list)

    def record(i, output):
        outputs[i].append(_first(output))

    with layer_hooks(layers, record):
        first, _ = alignment_loss(model, inputs, config)
    keys = [(i, k) for i in sorted(outputs) for k in range(len(outputs[i]))]
    grads = torch.autograd.grad(first, [outputs[i][k] for i, k in keys], allow_unused=True)
    grads = [torch.zeros_like(outputs[i][k]) if g is None else g for (i, k), g in zip(keys, grads)]
    scale = config.rho / (float(flat_norm(grads)) + 1e-7)
    perturbation = {key: (g * scale).detach() for key, g in zip(keys, grads)}
    calls: dict[int, int] = defaultdict(int)

    def perturb(i, output):
        k, calls[i] = calls[i], calls[i] + 1
        return _replace_first(output, _first(output) + perturbation[(i, k)])

    with layer_hooks(layers, perturb):
        loss, parts = alignment_loss(model, inputs, config)
    update = torch.autograd.grad(loss, params, allow_unused=True)
    return list(update), {"loss": loss.detach(), **parts, "unperturbed_loss": first.detach()}


class VaccineTrainer(GradientDefenseTrainer):
    def gradients(self, model, inputs):
        return vaccine_gradients(model, self.trainable(), inputs, self.defense_config)


@register
class Vaccine(TrainedDefense):
    kind = "vaccine"
    summary = "Vaccine (perturbation-aware alignment)"
    settings_class = VaccineConfig
    trainer_class = VaccineTrainer
