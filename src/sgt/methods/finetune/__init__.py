"""Supervised fine-tuning: the sft defense (`sgt sft`) and the malicious fine-tuning attack (`sgt attack`)."""

from .config import AttackConfig, FinetuneConfig
from .trainer import attack_examples, finetune, prepare_sft_examples, run_finetune

__all__ = ["AttackConfig", "FinetuneConfig", "attack_examples", "finetune", "prepare_sft_examples", "run_finetune"]
