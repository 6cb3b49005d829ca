"""`repnoise`: Representation Noising (Rosati et al., NeurIPS 2024).

Push the representations of harmful text toward Gaussian noise, so that no fine-tuning can easily
recover the information an attacker needs, while the model keeps refusing and keeps its benign
answers. The reference code (domenicrosati/representation-noising) minimises, per batch:

    CE(refusal)  +  beta * mean_l MMD(harmful states at layer l, Gaussian noise)  -  alpha * log(1 + CE_avg(harmful))

- MMD: a sum of 5 Gaussian kernels (bandwidth = the batch's mean pairwise squared distance times
  2^-2..2^2, no gradient through it) between each row's masked, flattened states and masked noise;
  averaged over layers. The reference hooks each block's MLP output; we use the block outputs
  (hidden_states[1..L]), which needs no model-specific hook.
- CE_avg(harmful): the harmful answers' cross-entropy of the final logits plus the "logit lens" of
  every hidden state (final norm + LM head), averaged: the log bounds the gradient ascent.
- The mask is the response tokens (the reference: where the harmful and refusal rows differ).
Reference settings: beta 0.001, alpha 1 (Llama-2-7B-chat, full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import cfg
from ..losses import predicting_mask, response_ce, upcast
from ..methods.defend import DefenseTrainer, DefenseTrainingConfig, lm_loss
from . import register
from .trained import TrainedDefense


@dataclass
class RepNoiseConfig(DefenseTrainingConfig):
    alpha: float = cfg(1.0, "Weight of the bounded gradient ascent on harmful answers.")
    beta: float = cfg(0.001, "Weight of the noise (MMD) term.")


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared MMD between row sets x and y (N, D) with a sum of 5 Gaussian kernels."""
    joint = torch.cat([x, y])
    distances = torch.cdist(joint, joint).pow(2)
    n = len(joint)
    bandwidth = distances.detach().sum() / (n * n - n)
    kernel = sum(torch.exp(-distances / (bandwidth * 2.0 ** k)) for k in range(-2, 3))
    m = len(x)
    return kernel[:m, :m].mean() + kernel[m:, m:].mean() - 2 * kernel[:m, m:].mean()


def noise_loss(hidden_states, mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers 1..L of the MMD between masked states (one flattened row per example) and noise."""
    mask = mask.unsqueeze(-1).to(hidden_states[1].dtype)
    losses = []
    for states in hidden_states[1:]:
        masked = (states * mask).flatten(1).float()
        noise = (torch.randn_like(states) * mask).flatten(1).float()
        losses.append(gaussian_mmd(masked, noise))
    return torch.stack(losses).mean()


def final_norm(model):
    """The decoder's final norm (the logit lens applies it before the LM head); identity if there is none."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    return getattr(decoder, "norm", None) or (lambda x: x)


def averaged_harmful_ce(model, outputs, labels: torch.Tensor) -> torch.Tensor:
    """CE of the final logits plus the logit lens of every hidden state, divided by the number of hidden
    states (as the reference: the final logits are the L+1-th term of a sum over L+1 states, plus one)."""
    head, norm = model.get_output_embeddings(), final_norm(model)
    total = response_ce(outputs.logits, labels)
    # The lens only at the positions that predict a response token: the same mean as response_ce over
    # the whole sequence, without applying the 49k-token head to prompt and padding (RepNoise and SEAM
    # spent most of their step there on a real model).
    predicting = predicting_mask(labels)
    targets = labels[:, 1:][predicting[:, :-1]]
    for states in outputs.hidden_states:
        if len(targets) == 0:
            total = total + states.sum() * 0.0
            continue
        lens_logits = head(norm(states[predicting]))
        total = total + F.cross_entropy(upcast(lens_logits), targets)
    return total / len(outputs.hidden_states)


def repnoise_objective(model, inputs: dict, config: RepNoiseConfig) -> tuple[torch.Tensor, dict]:
    refusal_ce, _ = lm_loss(model, inputs["refusal"])
    harmful = inputs["harmful"]
    outputs = model(input_ids=harmful["input_ids"], attention_mask=harmful["attention_mask"], use_cache=False,
                    output_hidden_states=True)
    mask = harmful["labels"] != -100
    noise = noise_loss(outputs.hidden_states, mask)
    harmful_ce = averaged_harmful_ce(model, outputs, harmful["labels"])
    ascent = torch.log1p(harmful_ce)
    loss = refusal_ce + config.beta * noise - config.alpha * ascent
    return loss, {"refusal_ce": refusal_ce.detach(), "noise_mmd": noise.detach(), "harmful_ce": harmful_ce.detach()}


class RepNoiseTrainer(DefenseTrainer):
    def objective(self, model, inputs):
        return repnoise_objective(model, inputs, self.defense_config)


@register
class RepNoise(TrainedDefense):
    kind = "repnoise"
    summary = "RepNoise (harmful states -> noise, bounded ascent)"
    settings_class = RepNoiseConfig
    trainer_class = RepNoiseTrainer
