"""Defenses applied before release: a registry with one contract.

A defense turns the base model into a defended Hugging Face checkpoint. It is one module in this
package with one class:

    @register
    class MyDefense(Defense):
        kind = "my-defense"                      # the name used in configs (`defense: my-defense`)
        summary = "what it does, in a few words" # shown by `sgt run --dry-run`
        settings_class = MySettings              # a dataclass: the settings a config writes for it
        def fingerprint(self) -> dict: ...        # everything its result depends on (for resume)
        def apply(self, folder: Path) -> str: ... # write the defended model under `folder`, return its path

`make_defense` types the settings before the defense is built: the run-wide fields (base model, defense
data, format, dtype, seed...) that `settings_class` has go under what the config writes, and the class
validates the result (UserError), so `self.settings` is always an instance of `settings_class`.
`apply` runs its training stages with `run_stage` (sgt.launch), which skips finished stages and resumes
interrupted ones, so a killed run resumes inside a defense too. Modules in this package are discovered
automatically: adding a defense is one new file (plus its test). The experiment runner and the report
hold no defense-specific code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import build_config, under
from ..context import RunContext
from ..errors import UserError
from ..registry import Registry

DEFENSES = Registry("defense", __name__, key="kind")
register = DEFENSES.register


@dataclass
class NoSettings:
    """The settings of a defense that takes none."""


@dataclass
class DefenseSpec:
    """One entry of an experiment's `defenses:` list, {name, defense, attacked, ...settings}, worked out here
    and nowhere else."""

    name: str                # the defense's name (its folders: defenses/NAME, attacks/NAME)
    kind: str                # the registered defense (`defense:`; default: the name)
    attacked: bool = True    # false: evaluated before attack only
    settings: dict = dataclasses.field(default_factory=dict)  # the rest: the defense's own settings

    @classmethod
    def of(cls, entry: dict) -> DefenseSpec:
        rest = {k: v for k, v in entry.items() if k not in ("name", "defense", "attacked")}
        name = str(entry.get("name") or entry.get("defense") or "")
        attacked = entry.get("attacked", True)
        if not isinstance(attacked, bool):
            raise UserError(f"defenses: `attacked` must be true or false, got {attacked!r}")
        return cls(name=name, kind=str(entry.get("defense") or name), attacked=attacked, settings=rest)


class Defense:
    """Base class: subclasses set `kind`, `summary` and `settings_class` and implement `fingerprint` and
    `apply`."""

    kind = ""
    summary = ""
    settings_class: type = NoSettings
    # True for the model as released: the report measures every defense's capability against it
    undefended = False

    def __init__(self, name: str, settings, context: RunContext):
        self.name, self.settings, self.context = name, settings, context

    @classmethod
    def run_values(cls, context: RunContext) -> dict:
        """The run-wide values under a config's settings: the base model, the defense data and the stage
        fields (only those `settings_class` has are used)."""
        return {"model": context.model, **dataclasses.asdict(context.defense_data), **context.stage_fields()}

    @classmethod
    def typed_settings(cls, values: dict, context: RunContext, where: str):
        """`values` (as a config writes them) as an instance of `settings_class`, over the run's values."""
        return build_config(cls.settings_class, under(cls.settings_class, values, cls.run_values(context)), where=where)

    def fingerprint(self) -> dict:
        raise NotImplementedError

    def apply(self, folder: Path) -> str:
        raise NotImplementedError

    def trigger_path(self, folder: Path) -> Path | None:
        """Where this defense's trigger is once applied (None: it has none); used by the drift measure."""
        return None


def make_defense(spec: DefenseSpec | dict, context: RunContext, name: str | None = None) -> Defense:
    """The defense of `spec` with typed settings; `name` (default: the spec's) names its folders, e.g. a
    copy NAME@seedK trained with another seed."""
    from ..utils import check_name

    spec = spec if isinstance(spec, DefenseSpec) else DefenseSpec.of(spec)
    name = check_name(name or spec.name, "defense name")  # a folder name
    cls = DEFENSES.get(spec.kind, where=f"defenses: {name}")
    if "out" in spec.settings:
        raise UserError(f"defenses: {name} sets `out`, but a defense is written under --out (defenses/{name}); "
                        "remove it")
    return cls(name, cls.typed_settings(spec.settings, context, where=f"defenses.{name}"), context)


def without_run_fields(values: dict) -> dict:
    """Fields that do not change a stage's result (where it is written, progress bars, resuming, what a
    weak trigger does)."""
    return {k: v for k, v in values.items()
            if k not in ("out", "progress", "resume", "logging_steps", "save_steps", "min_refusal", "on_weak")}
