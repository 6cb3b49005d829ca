"""The refusal target every stage trains toward, and the refusal rate every stage reports.

Neutral ground: stage 1, stage 2, the sft defense and the world builders all use these, and none
of them should import another method for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import cfg

REFUSAL = "I can't answer."  # the reference's refusal target


@dataclass
class HeldOutFields:
    """Held-out harmful prompts on which a stage reports its refusal rate (keyword judge)."""

    eval_data: str = cfg("", "Held-out harmful prompts for the refusal rate before/after the stage (empty: skip).")
    eval_split: str | None = cfg(None, "Split of eval_data (hub datasets).")
    eval_n: int = cfg(200, "Number of eval prompts used (sampled with seed).")
    eval_max_new_tokens: int = cfg(32, "Tokens generated per eval prompt.")


def refusal_rate(model, tokenizer, prompts: list[str], fmt, trigger=None,
                 max_new_tokens: int = 32, batch_size: int = 32) -> tuple[float, list[dict]]:
    """Fraction of prompts the model refuses (keyword judge), with or without the trigger."""
    from .generation import generate
    from .judges.keyword import KeywordJudge

    responses = generate(model, tokenizer, prompts, fmt, trigger=trigger, batch_size=batch_size,
                         max_new_tokens=max_new_tokens)
    judged = KeywordJudge().judge(list(zip(prompts, responses)))
    rows = [{"prompt": p, "response": r, "refused": not j.harmful} for p, r, j in zip(prompts, responses, judged)]
    return sum(r["refused"] for r in rows) / max(1, len(rows)), rows


def held_out_prompts(fields: HeldOutFields, seed: int) -> list[str]:
    """The held-out harmful prompts named by `fields` (empty when eval_data is not set)."""
    from .data.sources import load_examples

    if not fields.eval_data:
        return []
    prompts = [e.prompt for e in load_examples(fields.eval_data, split=fields.eval_split) if e.harmful is not False]
    if fields.eval_n and len(prompts) > fields.eval_n:
        prompts = random.Random(seed).sample(prompts, fields.eval_n)
    return prompts
