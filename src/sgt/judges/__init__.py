"""Harmfulness judges behind one contract (see `registry`).

  keyword    - offline refusal-phrase matching (GCG/AdvBench style)
  llm        - any OpenAI-compatible chat endpoint with the 1-5 harmfulness rubric
  classifier - a local Hugging Face guard / sequence-classification model
"""

from .registry import JUDGES, Judge, Judgment, judge_class, judge_options, make_judge, options_help

__all__ = ["JUDGES", "Judge", "Judgment", "judge_class", "judge_options", "make_judge", "options_help"]
