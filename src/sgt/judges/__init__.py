"""Harmfulness judges behind one contract (see `registry`).

  keyword    - offline refusal-phrase matching (GCG/AdvBench style)
  llm        - any OpenAI-compatible chat endpoint with the 1-5 harmfulness rubric
  classifier - a local Hugging Face guard / sequence-classification model
"""

from .registry import JUDGES, Judge, Judgment

# isort: off
# The built-in judges, registered in this order: the order help texts and errors list them in.
from . import keyword, llm, classifier  # noqa: F401
# isort: on
from .fields import JudgeFields, judge_options, make_judge, options_help

__all__ = ["JUDGES", "Judge", "JudgeFields", "Judgment", "judge_options", "make_judge", "options_help"]
