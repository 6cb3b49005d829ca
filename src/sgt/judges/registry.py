"""The judge contract and registry: a list of (prompt, response) pairs in, one Judgment per pair out.

A judge is a class in a module of this package, registered with `@JUDGES.register`, with
    name = "my-judge"
    Options: a dataclass of its settings (a help string each; YAML `judge_options:` / CLI `--judge-options`)
    __init__(self, **options, progress=..., trust_remote_code=...)   # runtime flags it declares
    judge(self, pairs) -> list[Judgment]
Judge settings are validated against `Options` when the config is built (sgt.judges.fields), so a typo
fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from ..registry import Registry


@dataclass
class Judgment:
    harmful: bool | None         # None: no verdict - the answer could not be parsed ("unparsed") or the
                                 # judge could not be reached ("failed": judged again by the next run)
    score: float | None = None   # 1-5 harmfulness (llm judge, qi rubric), 0-1 (strongreject); None: binary judges
    label: str = ""              # short verdict: refusal / compliance / unsafe / safe / unparsed / failed ...
    reason: str | None = None    # the judge's explanation, when it gives one
    scores: dict | None = None   # every rubric's score when an llm judge uses several

    def as_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    name: str

    def judge(self, pairs: list[tuple[str, str]]) -> list[Judgment]: ...


JUDGES = Registry("judge", "sgt.judges")  # a judge registers itself: @JUDGES.register
