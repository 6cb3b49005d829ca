"""`circuit-breakers`: Representation Rerouting (Zou et al., NeurIPS 2024, "Circuit Breakers").

Reroute the representations of harmful text away from the original model's (so the model cannot
produce what they encoded) and keep benign representations where they were. The reference code
(GraySwanAI/circuit-breakers) trains LoRA adapters and minimises, at step t of T:

    c_rr(t) * L_rr  +  c_retain(t) * L_retain,      c_rr = alpha * (1 - t / 2T),  c_retain = alpha * t / 2T
    L_rr     = mean over harmful prompt+response tokens and the target layers of ReLU(cos(h, h_orig))
    L_retain = mean over benign tokens and all layers of ||h - h_orig||_2

h_orig: the original model's states (adapters disabled; with full fine-tuning, a frozen copy).
Reference settings: alpha 10, target layers 10 and 20 of 32, LoRA r 16, lr 1e-4, 150 steps, batch 16.
Our default layers are the ones at 1/3 and 2/3 of the depth (10 and 20 on a 30-layer model). The retain
set is our benign stream plus the refusal stream (the reference adds refusals of harmful prompts to its
retain set for Llama-3), averaged.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..config import cfg
from ..methods.defend import DefenseTrainer, DefenseTrainingConfig
from . import register
from .trained import TrainedDefense


@dataclass
class CircuitBreakersConfig(DefenseTrainingConfig):
    alpha: float = cfg(10.0, "Scale of both terms (the schedule moves weight from rerouting to retaining).")
    layers: list[int] = cfg([], "Hidden-state layers rerouted on harmful text (empty: 1/3 and 2/3 of the depth).")
    lora: bool = cfg(True, "Train LoRA adapters (the reference) instead of all weights.")
    lora_r: int = cfg(16, "LoRA rank.")
    lora_alpha: int = cfg(16, "LoRA alpha.")
    lora_b_std: float = cfg(0.2, "Std of a random start for the LoRA B matrices (0: PEFT's zeros, as the "
                                 "reference). At zero every state equals the original's, where ReLU(cos) = 1 is at "
                                 "its maximum and its gradient vanishes: on the toy world the rerouting term then "
                                 "never moved (std 0.01 and 0.05 barely did; 0.2 did).")
    lr: float = cfg(1e-4, "Learning rate.")


def rerouting_loss(states, original, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens and the given layers of ReLU(cosine(current, original))."""
    total = 0.0
    for h, h0 in zip(states, original):
        cos = torch.nn.functional.cosine_similarity(h.float(), h0.float(), dim=-1)
        total = total + (torch.relu(cos) * mask).sum()
    return total / (mask.sum() * len(states)).clamp_min(1)


def retain_loss(states, original, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens and all given layers of the L2 distance to the original states."""
    total = 0.0
    for h, h0 in zip(states, original):
        total = total + ((h.float() - h0.float()).norm(dim=-1) * mask).sum()
    return total / (mask.sum() * len(states)).clamp_min(1)


def schedule(step: int, total: int, alpha: float) -> tuple[float, float]:
    """(c_rr, c_retain) at `step` of `total`."""
    progress = step / (2 * max(1, total))
    return alpha * (1 - progress), alpha * progress


class CircuitBreakersTrainer(DefenseTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        # LoRA: the original model is the same weights with the adapters disabled; otherwise a frozen copy.
        self.original = None if hasattr(model, "disable_adapter") else \
            copy.deepcopy(model).requires_grad_(False).eval().to(self.accelerator.device)
        if self.original is None and self.defense_config.lora_b_std:
            start_off_the_original(model, self.defense_config.lora_b_std, self.args.seed)

    @torch.no_grad()
    def original_states(self, model, batch):
        unwrapped = self.accelerator.unwrap_model(model)
        source = self.original or unwrapped
        with unwrapped.disable_adapter() if self.original is None else nullcontext():
            return source(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          output_hidden_states=True, use_cache=False).hidden_states

    def objective(self, model, inputs):
        config = self.defense_config
        harmful = inputs["harmful"]
        h = model(input_ids=harmful["input_ids"], attention_mask=harmful["attention_mask"],
                  output_hidden_states=True, use_cache=False).hidden_states
        layers = config.layers or default_layers(len(h) - 1)
        h0 = self.original_states(model, harmful)
        rr = rerouting_loss([h[i] for i in layers], [h0[i] for i in layers], harmful["attention_mask"])
        keep = []
        for stream in ("benign", "refusal"):  # the retain set: benign answers and refusals of harmful prompts
            batch = inputs[stream]
            r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=True, use_cache=False).hidden_states
            keep.append(retain_loss(r[1:], self.original_states(model, batch)[1:], batch["attention_mask"]))
        retain = sum(keep) / len(keep)
        c_rr, c_retain = schedule(self.state.global_step, self.state.max_steps, config.alpha)
        loss = c_rr * rr + c_retain * retain
        return loss, {"rerouting": rr.detach(), "retain": retain.detach()}


def start_off_the_original(model, std: float, seed: int) -> None:
    """Give the LoRA B matrices a small random start (seeded), so that the rerouting term has a gradient."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def default_layers(n_layers: int) -> list[int]:
    return sorted({max(1, round(n_layers / 3)), max(1, round(2 * n_layers / 3))})


@register
class CircuitBreakers(TrainedDefense):
    kind = "circuit-breakers"
    summary = "circuit breakers (reroute harmful states, retain benign)"
    settings_class = CircuitBreakersConfig
    trainer_class = CircuitBreakersTrainer
