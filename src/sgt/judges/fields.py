"""Choosing a judge in a config: its name and options, checked against the judge's `Options` when the
config is built, and the judge built from them."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

from ..config import cfg
from .registry import JUDGES, Judge


def judge_options(name: str, options: dict | None):
    """`options` checked and typed against judge `name`'s Options dataclass (one-line errors)."""
    from ..config import build_config

    return build_config(JUDGES.get(name).Options, dict(options or {}), where=f"judge_options ({name})")


def make_judge(name: str, options: dict | None = None, **runtime) -> Judge:
    """Build judge `name` from its options (a dict or its Options) and the runtime flags it accepts
    (progress, trust_remote_code: those it does not declare are ignored)."""
    cls = JUDGES.get(name)
    typed = options if dataclasses.is_dataclass(options) else judge_options(name, options)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(**dataclasses.asdict(typed), **{k: v for k, v in runtime.items() if k in accepted})


def options_help() -> str:
    """Every judge's options, for `--help`."""
    parts = []
    for name, judge in JUDGES.all().items():
        fields = dataclasses.fields(judge.Options)
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
