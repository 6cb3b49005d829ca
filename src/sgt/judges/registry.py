"""The judge contract and registry: a list of (prompt, response) pairs in, one Judgment per pair out.

A judge is a class in a module of this package with
    name = "my-judge"
    Options: a dataclass of its settings (a help string each; YAML `judge_options:` / CLI `--judge-options`)
    __init__(self, **options, progress=..., trust_remote_code=...)   # runtime flags it declares
    judge(self, pairs) -> list[Judgment]
and an entry in JUDGES (module:class). Judge settings are validated against `Options` when the config
is built, so a typo fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import asdict, dataclass
from typing import Protocol

from ..config import cfg
from ..errors import UserError


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


JUDGES = {"keyword": "sgt.judges.keyword:KeywordJudge", "llm": "sgt.judges.llm:LLMJudge",
          "classifier": "sgt.judges.classifier:ClassifierJudge"}


def judge_class(name: str) -> type:
    if name not in JUDGES:
        raise UserError(f"unknown judge {name!r}: use one of {', '.join(JUDGES)}")
    module, cls = JUDGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def judge_options(name: str, options: dict | None):
    """`options` checked and typed against judge `name`'s Options dataclass (one-line errors)."""
    from ..config import build_config

    return build_config(judge_class(name).Options, dict(options or {}), where=f"judge_options ({name})")


def make_judge(name: str, options: dict | None = None, **runtime) -> Judge:
    """Build judge `name` from its options (a dict or its Options) and the runtime flags it accepts
    (progress, trust_remote_code: those it does not declare are ignored)."""
    cls = judge_class(name)
    typed = options if dataclasses.is_dataclass(options) else judge_options(name, options)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(**dataclasses.asdict(typed), **{k: v for k, v in runtime.items() if k in accepted})


def options_help() -> str:
    """Every judge's options, for `--help`."""
    parts = []
    for name in JUDGES:
        fields = dataclasses.fields(judge_class(name).Options)
        parts.append(f"{name}: " + (", ".join(f.name for f in fields) or "none"))
    return "; ".join(parts)


@dataclass
class JudgeFields:
    """Which judge scores the answers, and its options (validated against that judge's Options)."""

    judge: str = cfg("keyword", "Judge: keyword (offline refusal phrases), llm (OpenAI-compatible endpoint) "
                                "or classifier (local Hugging Face guard/classifier).")
    judge_options: dict = cfg({}, "Options of the chosen judge: a YAML mapping, or key=value,... on the command "
                                  "line. " + options_help() + ".")

    def __post_init__(self):
        self.judge_options = {k: v for k, v in self.judge_options.items()}
        judge_options(self.judge, self.judge_options)  # unknown judge or option: one line, before any work

    def make_judge(self, progress: bool = False, trust_remote_code: bool = False):
        return make_judge(self.judge, self.judge_options, progress=progress, trust_remote_code=trust_remote_code)
