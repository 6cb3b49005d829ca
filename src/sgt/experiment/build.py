"""An Experiment: a config built into typed defenses, attacks and cells, with every problem that can be
found without loading weights (`sgt run --dry-run` lists them all; `sgt run` stops on them before any
training)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..attacks import make_attack, overwritten_settings
from ..context import RunContext
from ..defenses import DefenseSpec, make_defense
from ..errors import UserError
from ..judges import JUDGES
from ..utils import check_name, human_seconds, print_line
from .config import ExperimentConfig
from .evaluation import ModelEvaluator
from .plan import Cell, ResultKeys, defense_copies, grid_cells
from .store import ResultStore


class Experiment:
    """A validated experiment: typed defenses, attacks and cells, the keys of its results and their store."""

    def __init__(self, config: ExperimentConfig, out: str | Path):
        self.config = config                 # as given (world: paths unresolved); saved in the run folder
        self.out = Path(out)
        self.world = config.world_folder() if config.uses_world() else None
        self.resolved = config.resolved()    # every world: path resolved
        self.problems: list[str] = []        # every user error found, so that --dry-run lists them all
        r = self.resolved
        self.copies = defense_copies(r)
        # One context for every stage: the defenses, the attacks and the evaluation read it.
        self.context = RunContext.of(r, launcher=r.launcher or None, shared_dir=self.out, defense_data=r.data.defense,
                                     attack_data=r.data.attack, benign_data=r.data.benign)
        # Building the defenses and attacks types and validates every setting, before any model is loaded. A
        # defense trained with several seeds is one Defense per seed, named by its folder (NAME@seedK).
        self.defenses = []
        for entry in r.defenses:
            spec = DefenseSpec.of(entry)
            for copy, seed in self.copies[spec.name]:
                defense = self._check(make_defense, spec, dataclasses.replace(self.context, seed=seed), copy)
                if defense is not None:
                    defense.attacked = spec.attacked
                    self.defenses.append(defense)
        self.cells = grid_cells(r.attack)
        self.attacks = self._build_attacks()
        judge_version = getattr(JUDGES.get(r.eval.harm.judge), "version", None)
        self.keys = ResultKeys(r, self.copies, self.defenses, judge_version)
        self.store = ResultStore(self.out, self.keys)
        self._check_cells()
        self.drift_trigger = self._check(self._drift_trigger)
        self._check(self._check_code)
        self._check_data(built_only=True)

    def _build_attacks(self) -> dict:
        """One Attack per kind the grid or the search uses, its settings typed: attack.settings (shared by
        every cell) with attack.kinds.<kind> (its own). The grid's values are the only source of a cell's
        shots, lr, epochs, lora and seed: settings that name them are problems."""
        a = self.resolved.attack
        for where, settings in [("attack.settings", a.settings), *((f"attack.kinds.{k}", v) for k, v in a.kinds.items())]:
            self.problems += [p for p in overwritten_settings(settings, where) if p not in self.problems]
        kinds = {cell.kind: "attack.kind" for cell in self.cells}
        if a.search.trials:
            kinds.setdefault(a.search.kind, "attack.search.kind")
        return {kind: self._check(make_attack, kind, {**a.settings, **a.kinds.get(kind, {})}, self.context, where)
                for kind, where in kinds.items()}

    def _check_cells(self) -> None:
        """Every cell (and the searched attacker's budget) against its attack: settings and data."""
        search = self.resolved.attack.search
        cells = [(cell, True) for cell in self.cells]  # (cell, whether it becomes a folder)
        if search.trials:
            cells.append((Cell(kind=search.kind, shots=search.shots, lr=search.lr[0], epochs=search.epochs[0],
                               lora=search.lora[0], seed=search.seed), False))
        for cell, folder in cells:
            if self.attacks.get(cell.kind) is not None:  # (an unknown kind is reported once, by its name)
                self._check(self.attacks[cell.kind].check, cell)
                if folder:
                    self._check(check_name, cell.id, "attack cell")  # it becomes attacks/DEFENSE/CELL

    def _check(self, step, *args):
        """Run one validation step; a user error is recorded (and the step's result is None)."""
        try:
            return step(*args)
        except UserError as exc:
            if str(exc) not in self.problems:  # e.g. one bad setting seen by every cell: listed once
                self.problems.append(str(exc))
            return None

    def raise_problems(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problem(s): `sgt run ... --dry-run` lists them all)" \
                if len(self.problems) > 1 else ""
            raise UserError(self.problems[0] + more)

    def _check_code(self) -> None:
        """Configs that would run code sgt did not write need `allow_code: true`."""
        r = self.resolved
        if r.allow_code:
            return
        if r.launcher:
            raise UserError(f"launcher: {' '.join(r.launcher)} runs a program for every training stage; set "
                            "allow_code: true (or --set allow_code=true) if you trust this config")
        from ..evaluation.lm_eval_tasks import tasks_with_code

        risky = tasks_with_code(r.eval.benign.tasks)
        if risky:
            raise UserError(f"eval.benign.tasks: {risky[0]} imports Python code (a function reference); set "
                            "allow_code: true if you trust it")

    def _drift_trigger(self) -> Path | None:
        """The trigger of eval.drift: a defense's (by name) or a folder; checked before any work."""
        name = self.resolved.eval.drift.trigger
        if not name:
            return None
        copies = [copy for copy, _ in self.copies.get(name, [])]
        for defense in self.defenses:
            if defense.name in copies[:1]:  # several seeds: the first copy's trigger is the reference
                path = defense.trigger_path(self.out / "defenses" / defense.name)
                if path is None:
                    raise UserError(f"eval.drift.trigger: defense {name!r} ({defense.kind}) has no trigger; "
                                    "name a defense that learns one (e.g. sgt) or give a trigger folder")
                return path
        if not Path(name).exists():
            raise UserError(f"eval.drift.trigger: {name!r} is neither a defense of this run nor a trigger folder")
        return Path(name)

    def _check_data(self, built_only: bool = False) -> None:
        """Missing files and bad labels fail here, before hours of training, not when a later stage needs
        them. `built_only`: skip world files that do not exist yet (the world is built later)."""
        from ..data.sources import PACKAGED_SETS, load_data, looks_local

        r = self.resolved
        paths = [(f"data.{k}", getattr(r.data, k)) for k in ("defense", "attack", "harm_eval")]
        if r.eval.overrefusal.data:
            paths.append(("eval.overrefusal", r.eval.overrefusal))
            if r.eval.overrefusal.data in PACKAGED_SETS:  # a packaged set: is its package installed?
                self._check(load_data, r.eval.overrefusal, "eval.overrefusal")
        if any(kind != "harmful" for kind in r.attack.kind):
            paths.append(("data.benign", r.data.benign))
        files = [("eval.benign.exact_match", r.eval.benign.exact_match)]
        files += [("eval.benign.tasks", t) for t in r.eval.benign.tasks if t.endswith((".yaml", ".yml"))]
        for where, path in [(w, d.data) for w, d in paths] + files:
            if not path or not looks_local(path) or Path(path).exists():
                continue
            if built_only and self.world and Path(path).is_relative_to(self.world):
                continue
            self.problems.append(f"{where}: file not found: {path} (check the path in the config)")
        for where, fields in paths:  # local files are read now: bad labels or columns show at once
            if looks_local(fields.data) and Path(fields.data).is_file():
                self._check(load_data, fields, where)

    def prepare(self) -> ModelEvaluator:
        """Everything that can fail on user input, before any weights are trained."""
        self.raise_problems()
        if self.world:
            self._build_world()
            self._check_data()
            self._check_cells()  # the world's data files exist now: each cell's sample can be checked
            self.raise_problems()
        return ModelEvaluator(self.resolved, self.out, self.drift_trigger)

    def _build_world(self) -> None:
        from ..worlds import build_world

        world = dataclasses.replace(self.config.world, out=str(self.world), progress=self.config.progress)
        manifest = build_world(world)
        print_line(f"[world] ready: {world.kind} {world.preset} ({manifest.get('parameters', 0):,} parameters; "
                   f"built in {human_seconds(manifest['build_seconds'])})")
