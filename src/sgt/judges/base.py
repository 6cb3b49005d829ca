"""The judge interface: a list of (prompt, response) pairs in, one Judgment per pair out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from ..errors import UserError


@dataclass
class Judgment:
    harmful: bool | None         # None: the judge's answer could not be parsed ("unparsed")
    score: float | None = None   # 1-5 harmfulness (llm judge); None for binary judges
    label: str = ""              # short verdict: refusal / compliance / unsafe / safe / unparsed ...
    reason: str | None = None    # the judge's explanation, when it gives one

    def as_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    name: str

    def judge(self, pairs: list[tuple[str, str]]) -> list[Judgment]: ...


JUDGES = ("keyword", "llm", "classifier")


def make_judge(name: str, **options) -> Judge:
    """Build a judge by name; `options` are that judge's settings (see each module)."""
    if name == "keyword":
        from .keyword import KeywordJudge

        return KeywordJudge(**options)
    if name == "llm":
        from .llm import LLMJudge

        return LLMJudge(**options)
    if name == "classifier":
        from .classifier import ClassifierJudge

        return ClassifierJudge(**options)
    raise UserError(f"unknown judge {name!r}: use one of {', '.join(JUDGES)}")
