"""`mixed`: benign fine-tuning data with a fraction of harmful pairs mixed in (the Vaccine / Booster /
Lisa protocol; default 10%). `shots` counts all rows. Benign rows come from `benign_data` (default in
the experiment: the benign rows of the defense data)."""

from __future__ import annotations

from . import register
from .harmful import HarmfulFinetune


@register
class MixedFinetune(HarmfulFinetune):
    kind = "mixed"
    summary = "SFT on benign data with a harmful fraction"
    defaults = {"harmful_fraction": 0.1}
