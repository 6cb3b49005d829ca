"""Loss pieces shared by the stages: response-token cross-entropy and KL on shifted logits.

Logits at position t predict token t+1, so every per-token loss here pairs logits[:, :-1] with
labels[:, 1:]; `predicting_mask` is the set of positions whose next token is a response token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data.formats import IGNORE_INDEX


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to fp32 for a stable softmax; fp32 and fp64 stay as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def predicting_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: position t predicts a response token (labels[t+1] is not ignored)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def response_ce(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of the selected rows (all rows if None)."""
    if rows is not None:
        labels = labels.masked_fill(~rows.unsqueeze(1), IGNORE_INDEX)
    shift_labels = labels[:, 1:]
    if (shift_labels != IGNORE_INDEX).sum() == 0:
        return logits.sum() * 0.0  # keeps the graph (DDP) and contributes nothing
    return F.cross_entropy(upcast(logits[:, :-1]).flatten(0, 1), shift_labels.flatten(), ignore_index=IGNORE_INDEX)


def masked_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """Mean over masked positions of KL(p || q), p and q given as logits (p is treated as fixed)."""
    if mask.sum() == 0:
        return q_logits.sum() * 0.0
    return kl_rows(p_logits[mask], q_logits[mask], temperature)


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of KL(p || q) for (N, V) logits (p is treated as fixed)."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
