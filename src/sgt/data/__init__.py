"""Data layer: where examples come from (sources), how they become tokens (formats), batching (collate)."""

from .collate import Collator, pad_batch
from .formats import Encoded, PromptFormat
from .sources import DataFields, Example, load_data, load_examples, sample_mix, sample_shots

__all__ = [
    "Collator", "DataFields", "Encoded", "Example", "PromptFormat", "load_data", "load_examples",
    "pad_batch", "sample_mix", "sample_shots",
]
