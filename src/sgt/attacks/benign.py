"""`benign`: fine-tuning on benign data only. Not an attack, the question is whether safety drifts
anyway when a user fine-tunes the released model on an ordinary task."""

from __future__ import annotations

from . import register
from .harmful import HarmfulFinetune


@register
class BenignFinetune(HarmfulFinetune):
    kind = "benign"
    summary = "SFT on benign data only (does safety drift?)"
    defaults = {"harmful_fraction": 0.0}
