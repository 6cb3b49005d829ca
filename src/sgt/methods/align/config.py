"""Settings of stage 2 (reference: seed script 3.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import cfg, reference_defaults
from ...data.formats import FORMATS
from ...data.sources import DataFields
from ...errors import UserError
from ...refusal import REFUSAL, HeldOutFields
from ...training import LoraFields, OptimFields, validate_optim

POSITIONS = ("predicting", "response", "prompt+response")
DISTANCES = ("mse", "relative", "cosine")
REPELS = ("log", "hinge", "inverse", "inverse_sqrt", "none")
REDUCTIONS = ("row", "token")
TEACHER_EMBEDDINGS = ("frozen", "student")


@reference_defaults
@dataclass
class AlignConfig(HeldOutFields, OptimFields, LoraFields, DataFields):
    model: str = cfg("", "Model to align (also the frozen teacher): a Hugging Face name or a local folder.")
    trigger: str = cfg("", "Trigger learned by `sgt trigger` for this model (folder or .safetensors).")
    force_trigger: bool = cfg(False, "Accept a trigger whose model fingerprint differs from this model's.")
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
    repel_reduce: str = cfg("row", "How the benign distance is pooled before the repel function: row (per row, "
                                   "then the mean over rows; the reference) or token (over all benign tokens).")
    repel_margin: float = cfg(0.3, "Margin of the hinge repel term.")
    repel_eps: float = cfg(1e-3, "Epsilon of the log/inverse repel terms.")
    alpha: float = cfg(1.0, "Weight of each layer's alignment term (also of the anchor after a simulated attack, "
                            "attack_steps).")
    beta: float = cfg(1.0, "Weight of the benign repel term inside each layer term.")
    ce_weight: float = cfg(1.0, "Weight of the language-model cross-entropy on benign responses.")
    harmful_ce_weight: float = cfg(0.0, "Weight of cross-entropy toward the refusal on harmful rows (0: reference).")
    distill_weight: float = cfg(0.0, "Weight of trigger-output distillation (not in the reference; 0: off): "
                                     "KL(teacher || student) of the next-token distributions on harmful rows at the "
                                     "aligned positions, the teacher being the frozen model WITH the trigger, so that "
                                     "the model without the trigger answers as the trigger makes the base answer.")
    teacher_embeddings: str = cfg("frozen", "Embedding table the teacher reads its input through: frozen (the initial "
                                            "model's) or student (the model being trained, as the reference code did).")
    attack_steps: int = cfg(0, "Anchor at simulated-attack weights (not in the reference; 0: off): each step also "
                               "runs K steps of harmful fine-tuning from the current weights and adds the gradient of "
                               "the attract term measured there (first order), so the anchor is trained to survive "
                               "the attack. Needs harmful prompts with harmful responses in the data.")
    attack_lr: float = cfg(1e-4, "Learning rate of the simulated attack (AdamW, fresh every step).")
    attack_weight: float = cfg(1.0, "Weight of the anchor at the attacked weights: the gradient added is attack_weight "
                                    "x alpha x the gradient of attract there.")
    reference: bool = cfg(False, "Start from every setting of the reference code except its bugs (fields set "
                                 "explicitly still win; from Python, YAML or the command line alike); see README "
                                 "'Differences from the reference code'.")

    # The reference's stage-2 choices (seed script 3.2), bugs left out: its intended mask (response
    # tokens), per-row repel, and the Trainer defaults its optimiser really ran with (lr 5e-5, linear).
    REFERENCE: ClassVar[dict] = {
        "positions": "response", "distance": "mse", "repel": "log", "repel_reduce": "row", "repel_eps": 1e-3,
        "alpha": 1.0, "beta": 1.0, "ce_weight": 1.0, "harmful_ce_weight": 0.0, "distill_weight": 0.0, "layers": [], "rows": 5000,
        "harm_ratio": 0.5, "lr": 5e-5, "epochs": 1.0, "batch_size": 2, "grad_accum": 4, "max_length": 1024,
        "scheduler": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 42, "lora": False,
    }
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
            (self.repel_reduce in REDUCTIONS, f"repel_reduce must be row or token, got {self.repel_reduce!r}"),
            (self.teacher_embeddings in TEACHER_EMBEDDINGS,
             f"teacher_embeddings must be frozen or student, got {self.teacher_embeddings!r}"),
            (0 <= self.harm_ratio <= 1, f"harm_ratio must be in [0, 1], got {self.harm_ratio}"),
            (self.rows is None or self.rows > 0, f"rows must be positive, got {self.rows}"),
            (self.attack_steps >= 0, f"attack_steps must be 0 or more, got {self.attack_steps}"),
            (self.distill_weight >= 0, f"distill_weight must be 0 or more, got {self.distill_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
