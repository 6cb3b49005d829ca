"""Stage 2: align the model (without trigger) to the trigger-induced representations (`sgt align`)."""

from .config import DISTANCES, POSITIONS, REPELS, AlignConfig
from .trainer import (
    AlignmentTrainer,
    align_model,
    alignment_loss,
    alignment_objective,
    position_mask,
    repel_term,
    resolve_layers,
    stage2_rows,
    state_distance,
)

__all__ = ["DISTANCES", "POSITIONS", "REPELS", "AlignConfig", "AlignmentTrainer", "align_model", "alignment_loss",
           "alignment_objective", "position_mask", "repel_term", "resolve_layers", "stage2_rows", "state_distance"]
