"""Stage 1: learn the Safety Guidance Trigger on the frozen model (`sgt trigger`)."""

from .config import TriggerConfig
from .trainer import TriggeredLM, TriggerTrainer, learn_trigger, new_trigger, stage1_rows, trigger_loss

__all__ = ["TriggerConfig", "TriggerTrainer", "TriggeredLM", "learn_trigger", "new_trigger", "stage1_rows",
           "trigger_loss"]
