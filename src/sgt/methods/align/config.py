"""Settings of stage 2 (reference: seed script 3.2)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import cfg
from ...data.formats import FORMATS
from ...data.sources import DataFields
from ...errors import UserError
from ...refusal import REFUSAL, HeldOutFields
from ...training import LoraFields, OptimFields, validate_optim

POSITIONS = ("predicting", "response", "prompt+response")
DISTANCES = ("mse", "relative", "cosine")
REPELS = ("log", "hinge", "inverse", "inverse_sqrt", "none")


@dataclass
class AlignConfig(HeldOutFields, OptimFields, LoraFields, DataFields):
    model: str = cfg("", "Model to align (also the frozen teacher): a Hugging Face name or a local folder.")
    trigger: str = cfg("", "Trigger learned by `sgt trigger` for this model (folder or .safetensors).")
    out: str = cfg("", "Output folder: the aligned model (a plain Hugging Face checkpoint, no trigger needed).")
    data: str = cfg("allenai/wildguardmix", "Alignment data with harmful and benign prompts (WildGuardTrain schema).")
    format: str = cfg("plain", "Prompt format: plain or chat (must match the trigger's).")
    rows: int | None = cfg(5000, "Rows sampled from the data (None: all rows).")
    harm_ratio: float = cfg(0.5, "Fraction of harmful rows in the sample.")
    refusal: str = cfg(REFUSAL, "Target response of harmful rows.")
    layers: list[int] = cfg([], "Transformer layers to align, 1..n_layers (empty: all layers).")
    positions: str = cfg("predicting", "Aligned positions: predicting (response tokens + the position that "
                                       "predicts the first one), response (response tokens only) or prompt+response.")
    distance: str = cfg("mse", "Distance between states: mse (mean over hidden dim, reference), relative "
                              "(||s - t||^2 / ||t||^2: every layer on the same scale) or cosine (1 - cos).")
    repel: str = cfg("log", "Benign repel term: log (log(1 + 1/(d+eps))), hinge (relu(margin - d)), "
                            "inverse (1/(d+eps)), inverse_sqrt (1/sqrt(d+eps)) or none.")
    repel_margin: float = cfg(0.3, "Margin of the hinge repel term.")
    repel_eps: float = cfg(1e-3, "Epsilon of the log/inverse repel terms.")
    alpha: float = cfg(1.0, "Weight of each layer's alignment term.")
    beta: float = cfg(1.0, "Weight of the benign repel term inside each layer term.")
    ce_weight: float = cfg(1.0, "Weight of the language-model cross-entropy on benign responses.")
    harmful_ce_weight: float = cfg(0.0, "Weight of cross-entropy toward the refusal on harmful rows (0: reference).")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    # reference optimisation defaults (its --lr 1e-3 never reached the optimiser: 5e-5 was used)
    lr: float = cfg(5e-5, "Learning rate (AdamW).")
    batch_size: int = cfg(2, "Per-device batch size.")
    grad_accum: int = cfg(4, "Gradient accumulation steps.")
    max_length: int = cfg(1024, "Maximum tokens per row.")

    def __post_init__(self):
        validate_optim(self)
        checks = [
            (self.format in FORMATS, f"unknown format {self.format!r}: use plain or chat"),
            (self.positions in POSITIONS, f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}"),
            (self.distance in DISTANCES, f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}"),
            (self.repel in REPELS, f"repel must be one of {', '.join(REPELS)}, got {self.repel!r}"),
            (0 <= self.harm_ratio <= 1, f"harm_ratio must be in [0, 1], got {self.harm_ratio}"),
            (self.rows is None or self.rows > 0, f"rows must be positive, got {self.rows}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
