"""Harmfulness judges behind one small interface (see `base.Judge`).

  keyword    - offline refusal-phrase matching (GCG/AdvBench style)
  llm        - any OpenAI-compatible chat endpoint with the 1-5 harmfulness rubric
  classifier - a local Hugging Face guard / sequence-classification model
"""

from .base import Judge, Judgment, make_judge

__all__ = ["Judge", "Judgment", "make_judge"]
