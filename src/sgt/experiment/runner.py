"""`sgt run`: defenses x attack grid x evaluation -> report, from one YAML config, resumable.

    sgt run configs/toy.yaml --out runs/toy-demo

Layout of the run folder (results on disk are the source of truth; a re-run skips what is done):
    config.yaml                                  the experiment config as given
    defenses/<name>/model/ (+ trigger/)          defended checkpoints (the base itself for `none`)
    defenses/<name>/result.json                  evaluation of the defended model (no attack)
    attacks/<name>/<cell>/result.json            evaluation after one attack cell (a diverged attack:
                                                 failed: diverged, its reason, no rates; the grid goes on)
    results.json, report.md, *.png               the report (rebuilt at the end of every run)
Each result.json stores a fingerprint of everything it depends on; a result whose fingerprint no
longer matches the config is recomputed, so `--force` on a changed config redoes only what changed.
A defense interrupted mid-way resumes: finished stages are kept, and a stage with checkpoints
(save_steps > 0) continues from its last one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from ..attacks import AttackContext, make_attack, overwritten_settings
from ..config import read_yaml, save_config, show_config, to_dict
from ..defenses import DefenseContext, make_defense
from ..errors import IncompleteRun, TrainingDiverged, UserError
from ..judges import judge_class
from ..utils import atomic_write_json, check_name, human_seconds, print_line, read_json
from .config import ExperimentConfig, defense_name, load_experiment
from .evaluation import ModelEvaluator
from .plan import Cell, defense_copies, fingerprint, grid_cells
from .search import SearchCell


class Experiment:
    """A validated experiment: typed defenses, attacks and cells; `run()` executes what is not done."""

    def __init__(self, config: ExperimentConfig, out: str | Path):
        self.config = config                 # as given (world: paths unresolved); saved in the run folder
        self.out = Path(out)
        self.world = config.world_folder() if config.uses_world() else None
        self.resolved = config.resolved()    # every world: path resolved
        self.problems: list[str] = []        # every user error found, so that --dry-run lists them all
        self.clock: RunClock | None = None   # run.json's timing, updated after every evaluation
        r = self.resolved
        self.copies = defense_copies(r)
        # Building the defenses and attacks validates every setting, before any model is loaded. A defense
        # trained with several seeds is one Defense per seed, named by its folder (NAME@seedK).
        self.defenses = []
        for spec in r.defenses:
            for copy, seed in self.copies[defense_name(spec)]:
                context = DefenseContext(base_model=r.model, defense_data=to_dict(r.data.defense), format=r.format,
                                         dtype=r.dtype, seed=seed, trust_remote_code=r.trust_remote_code,
                                         progress=r.progress, launcher=r.launcher or None, shared_dir=self.out)
                settings = {k: v for k, v in spec.items() if k != "attacked"}
                settings.setdefault("defense", defense_name(spec))  # the copy NAME@seedK is not a kind
                defense = self._check(make_defense, {**settings, "name": copy}, context)
                if defense is not None:
                    defense.attacked = spec.get("attacked", True)
                    self.defenses.append(defense)
        self.attack_context = AttackContext(attack_data=to_dict(r.data.attack), benign_data=r.data.benign.data,
                                            format=r.format, dtype=r.dtype, trust_remote_code=r.trust_remote_code,
                                            progress=r.progress, launcher=r.launcher or None)
        self.cells = grid_cells(r.attack)
        self.judge_version = getattr(judge_class(r.eval.harm.judge), "version", None)  # part of every judgment's key
        self.attacks = self._build_attacks()
        self._check_cells()
        self.drift_trigger = self._check(self._drift_trigger)
        self._check(self._check_code)
        self._check_data(built_only=True)

    def make_attack(self, kind: str, extra: dict | None = None, where: str = "attack.kind"):
        """Attack `kind` with the grid's shared settings, its own (attack.kinds) and `extra` (a search's)."""
        a = self.resolved.attack
        return make_attack(kind, {**a.settings, **a.kinds.get(kind, {}), **(extra or {})}, self.attack_context,
                           where)

    def _build_attacks(self) -> dict:
        """One Attack per kind the grid or the search uses, each checked with every cell it will run:
        the grid's values are the only source of a cell's shots, lr, epochs, lora and seed."""
        a = self.resolved.attack
        for where, settings in [("attack.settings", a.settings), *((f"attack.kinds.{k}", v) for k, v in a.kinds.items())]:
            self.problems += [p for p in overwritten_settings(settings, where) if p not in self.problems]
        attacks = {}
        for cell in self.cells:
            if cell.kind not in attacks:
                attacks[cell.kind] = self._check(self.make_attack, cell.kind)
        if a.search.trials and a.search.kind not in attacks:
            attacks[a.search.kind] = self._check(self.make_attack, a.search.kind, None, "attack.search.kind")
        return attacks

    def _check_cells(self) -> None:
        """Every cell (and the searched attacker's budget) against its attack: settings and data."""
        search = self.resolved.attack.search
        cells = list(self.cells)
        if search.trials:
            cells.append(SearchCell(kind=search.kind, shots=search.shots, lr=search.lr[0], epochs=search.epochs[0],
                                    lora=search.lora[0], seed=search.seed))
        for cell in cells:
            if self.attacks.get(cell.kind) is not None:  # (an unknown kind is reported once, by its name)
                self._check(self.attacks[cell.kind].check, cell)
                if isinstance(cell, Cell):
                    self._check(check_name, cell.id, "attack cell")  # it becomes attacks/DEFENSE/CELL

    def search_fingerprint(self, defense) -> str:
        return fingerprint({"defense": defense.fingerprint(), **self.eval_fingerprint(),
                            # not `trials`: asking for more trials continues the same study
                            "search": {k: v for k, v in to_dict(self.resolved.attack.search).items() if k != "trials"},
                            "attack": self.resolved.attack.settings,
                            "attack_data": to_dict(self.resolved.data.attack)})[:8]

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
        from ..evaluation.benign import tasks_with_code

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

    # -- the plan ----------------------------------------------------------------------------------

    def describe(self, gpu_memory: float | None = None) -> str:
        """The plan as text; with `gpu_memory` (GiB) also the memory plan of every training stage."""
        r = self.resolved
        lines = [f"experiment {r.name!r} -> {self.out}"]
        if self.world:
            from ..worlds import WORLD_FILE

            w = r.world
            state = "built" if (self.world / WORLD_FILE).is_file() else "will be built"
            base = f" base={w.base_model}" if w.base_model else ""
            lines.append(f"  world: kind={w.kind} preset={w.preset} seed={w.seed}{base} at {self.world} ({state})")
        lines.append(f"  base model: {r.model}  (format={r.format}, dtype={r.dtype})")
        lines.append(f"  launcher: {' '.join(r.launcher) if r.launcher else 'in-process'}")
        for key in ("defense", "attack", "harm_eval"):
            d = getattr(r.data, key)
            lines.append(f"  data.{key}: {d.data}" + (f" (split={d.split})" if d.split else ""))
        h, b = r.eval.harm, r.eval.benign
        lines.append(f"  evaluation: judge={h.judge} {h.judge_options or ''}, n={h.n}, max_new_tokens={h.max_new_tokens}; "
                     f"benign: exact_match={b.exact_match}, tasks={b.tasks or '-'}; drift: {r.eval.drift.trigger or 'off'}")
        lines.append("  defenses:")
        for defense in self.defenses:
            lines.append(f"    - {defense.name}: {defense.summary}" + ("" if defense.attacked else " (not attacked)"))
        g = r.attack
        lines.append(f"  attack grid: {len(self.cells)} cells per defense = kind {g.kind} x shots {g.shots} x lr "
                     f"{g.lr} x epochs {g.epochs} x lora {g.lora} x seeds {g.seeds}"
                     + "".join(f" + {part}" for part in g.extra))
        if g.search.trials:
            lines.append(f"  searched attacker: {g.search.trials} trials per defense at a budget of {g.search.shots} "
                         f"examples (lr {g.search.lr}, epochs {g.search.epochs}, batch {g.search.batch_size}, "
                         f"LoRA {g.search.lora})")
        total = sum(1 + len(self.cells) * d.attacked for d in self.defenses)
        done = len(list(self.out.glob("defenses/*/result.json")) + list(self.out.glob("attacks/*/*/result.json")))
        lines.append(f"  evaluations: {total} ({done} already done)")
        if gpu_memory is not None:
            from ..memory_plan import plan_text

            lines.append(plan_text(self, gpu_memory))
        return "\n".join(lines)

    def eval_fingerprint(self) -> dict:
        r = self.resolved
        key = {"eval": to_dict(r.eval), "harm_eval": to_dict(r.data.harm_eval), "seed": r.seed, "format": r.format}
        if not r.eval.overrefusal.data:  # not measured: results of runs older than the setting stay valid
            del key["eval"]["overrefusal"]
        if r.eval.drift.trigger:  # the drift reference may be a defense's trigger: results depend on it
            first = [copy for copy, _ in self.copies.get(r.eval.drift.trigger, [])][:1]
            key["drift_defense"] = [d.fingerprint() for d in self.defenses if d.name in first]
        return key

    def release_key(self, defense) -> dict:
        """Everything the evaluation of `defense`'s model before attack depends on."""
        return {"defense": defense.fingerprint(), **self.eval_fingerprint()}

    def cell_key(self, defense, cell: Cell) -> dict:
        """Everything one attack cell's result depends on."""
        key = {**self.release_key(defense), "cell": dataclasses.asdict(cell), "attack": self.attacks[cell.kind].settings,
               "attack_data": to_dict(self.resolved.data.attack)}
        if cell.kind != "harmful":  # kinds that mix in benign data depend on it too
            key["benign_data"] = to_dict(self.resolved.data.benign)
        return key

    def digests(self, key: dict) -> tuple[tuple[str, str], str]:
        """(the fingerprints that saved answers of the evaluation `key` may carry, the fingerprint of their
        judgment). The answers do not depend on the judge; the judgment depends on it and on its version,
        so that a changed or improved judge judges saved answers again without generating them again.
        Answers saved before this split carry the digest of the whole key, which is accepted too."""
        harm = {k: v for k, v in key["eval"]["harm"].items() if k not in ("judge", "judge_options")}
        answers_key = {**key, "eval": {**key["eval"], "harm": harm}}
        judged = key if self.judge_version is None else {**key, "judge_version": self.judge_version}
        return (fingerprint(answers_key), fingerprint(key)), fingerprint(judged)

    def reuse(self, other: Path) -> tuple[int, int]:
        """Copy from the run folder `other` every defended model and result this run would produce
        identically (same fingerprints), e.g. the shared defenses of two studies; returns how many
        defended models and results. Files are hard-linked where the file system allows, so a reused
        model costs no disk."""
        other, models, results = Path(other), 0, 0
        for defense in self.defenses:
            source, target = other / "defenses" / defense.name, self.out / "defenses" / defense.name
            state = _read_marker(source / "defense.json")
            if state.get("fingerprint") != fingerprint(defense.fingerprint()) or not state.get("done"):
                continue
            if _read_marker(target / "defense.json").get("fingerprint") != state["fingerprint"]:
                _copy_folder(source, target, skip=("answers.json", "result.json"))  # results: below
                atomic_write_json(target / "defense.json", {**state, **_model_entry(_model_path(state, source), source)})
                models += 1
            trigger = defense.trigger_path(target)  # a trigger shared by the run's SGT variants lives apart
            if trigger is not None and trigger.is_relative_to(self.out) and not trigger.is_dir():
                shared = other / trigger.relative_to(self.out)
                if shared.is_dir():
                    _copy_folder(shared, trigger)
            pairs = [(source, target, self.release_key(defense))]
            pairs += [(other / "attacks" / defense.name / c.id, self.out / "attacks" / defense.name / c.id,
                       self.cell_key(defense, c)) for c in self.cells]
            for cell_source, cell_target, key in pairs:
                answered, judged = self.digests(key)
                names = []  # judged results with their answers; else answers alone, judged by this run
                if (_read_marker(cell_source / "result.json").get("fingerprint") == judged
                        and _read_marker(cell_target / "result.json").get("fingerprint") != judged):
                    names = ["answers.json", "result.json"]
                elif (_read_marker(cell_source / "answers.json").get("fingerprint") in answered
                      and _read_marker(cell_target / "answers.json").get("fingerprint") not in answered):
                    names = ["answers.json"]
                for name in names:
                    if (cell_source / name).is_file():
                        cell_target.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(cell_source / name, cell_target / name)
                results += bool(names)
        return models, results

    # -- running -----------------------------------------------------------------------------------

    def prepare(self) -> ModelEvaluator:
        """Everything that can fail on user input, before any weights are trained."""
        self.raise_problems()
        if self.world:
            self._build_world()
            self._check_data()
            self._check_cells()  # the world's data files exist now: each cell's sample can be checked
            self.raise_problems()
        return ModelEvaluator(self.resolved, self.out, self.drift_trigger)

    def run(self, evaluator: ModelEvaluator | None = None) -> dict:
        from ..report import write_report
        from ..utils import seed_everything

        start = time.time()
        evaluator = evaluator or self.prepare()
        seed_everything(self.resolved.seed)
        # Each defense is trained just before its own evaluation and attacks, so that a run stopped
        # part-way leaves whole rows of results; only the defense whose trigger the drift probe uses
        # is trained first, because every evaluation measures drift.
        model_dirs: dict[str, str] = {}
        for defense in self.defenses:
            if self.drift_trigger is not None and defense.trigger_path(self.out / "defenses" / defense.name) == self.drift_trigger:
                model_dirs[defense.name] = self._defended_model(defense, self.out / "defenses" / defense.name)
        evaluator.prepare_drift()
        total = sum(1 + len(self.cells) * d.attacked for d in self.defenses)
        step = 0
        skip_broken = self.resolved.attack.skip_broken
        threshold = self.resolved.report.break_threshold
        for defense in self.defenses:
            if defense.name not in model_dirs:
                model_dirs[defense.name] = self._defended_model(defense, self.out / "defenses" / defense.name)
            model_dir = model_dirs[defense.name]
            step += 1
            trigger = defense.trigger_path(self.out / "defenses" / defense.name)
            defended = self._cell(self.out / "defenses" / defense.name, self.release_key(defense),
                                  f"[{step}/{total}] {defense.name}, no attack",
                                  lambda md=model_dir, t=trigger: evaluator.answer(md, trigger=t), evaluator)
            broken = (defended.get("harmful_rate") or 0) >= threshold
            if defense.attacked and skip_broken and broken:
                step += len(self.cells)
                print_line(f"[{step}/{total}] {defense.name}: not attacked, harmful before any attack "
                           f"({defended['harmful_rate']:.2f} >= {threshold:.2f}; attack.skip_broken)")
                continue
            for cell in self.cells if defense.attacked else []:
                step += 1
                cell_dir = self.out / "attacks" / defense.name / cell.id
                label = f"[{step}/{total}] {defense.name}, shots={cell.shots} {cell.setting} seed={cell.seed}"
                self._cell(cell_dir, self.cell_key(defense, cell), label,
                           lambda md=model_dir, cd=cell_dir, c=cell: self._attack_and_answer(md, c, cd, evaluator),
                           evaluator, extra={"defense": defense.name, "cell": dataclasses.asdict(cell),
                                             "setting": cell.setting})
        search = self.resolved.attack.search
        if search.trials:
            from .search import run_search

            floor = search.capability_floor or self.resolved.report.capability_floor
            for defense in self.defenses:
                if defense.name != self.copies[_name_of(defense.name, self.copies)][0][0]:
                    continue  # several defense seeds: the attacker searches against the first copy
                defended = _read_marker(self.out / "defenses" / defense.name / "result.json")
                run_search(self, defense, model_dirs[defense.name], defended, evaluator, search, floor)
        summary = write_report(self.out, self.config, self.cells, self.copies)
        summary["seconds"] = round(time.time() - start, 1)
        print_line(f"done in {human_seconds(summary['seconds'])}: {self.out / 'report.md'}")
        self._raise_incomplete()
        return summary

    def _raise_incomplete(self) -> None:
        """Exit code 1 (IncompleteRun) when the report lacks results: diverged attack cells (recorded, the
        rest of the grid ran) or failed judge calls (judged again by the next run)."""
        folders = [self.out / "defenses" / d.name for d in self.defenses]
        folders += [self.out / "attacks" / d.name / c.id for d in self.defenses if d.attacked for c in self.cells]
        results = [(f, _read_marker(f / "result.json")) for f in folders]  # this config's only, not stale ones
        diverged = [f.relative_to(self.out) for f, r in results if r.get("failed") == "diverged"]
        unjudged = [f for f, r in results if (r.get("harm") or {}).get("failed")]
        problems = []
        if diverged:
            problems.append(f"{len(diverged)} attack cell(s) diverged (e.g. {diverged[0]}); the report shows them as "
                            "failed; lower attack.lr for those settings")
        if unjudged:
            problems.append(f"judge calls failed in {len(unjudged)} evaluation(s) (e.g. {unjudged[0]}); the report "
                            "leaves them out; run the same command again to judge only those (answers are kept)")
        if problems:
            raise IncompleteRun("; ".join(problems))

    def _build_world(self) -> None:
        from ..worlds import build_world

        world = dataclasses.replace(self.config.world, out=str(self.world), progress=self.config.progress)
        manifest = build_world(world)
        print_line(f"[world] ready: {world.kind} {world.preset} ({manifest.get('parameters', 0):,} parameters; "
                   f"built in {human_seconds(manifest['build_seconds'])})")

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

    def _defended_model(self, defense, folder: Path) -> str:
        """Apply `defense` once: reuse a finished one, resume an interrupted one, redo a stale one."""
        marker = folder / "defense.json"
        key = fingerprint(defense.fingerprint())
        state = _read_marker(marker)
        if state.get("fingerprint") == key and state.get("done"):
            return _model_path(state, folder)
        if folder.exists() and state.get("fingerprint") != key:
            shutil.rmtree(folder)  # made by another config: start this defense over
        folder.mkdir(parents=True, exist_ok=True)
        resuming = state.get("fingerprint") == key
        print_line(f"[defense {defense.name}] {'resuming' if resuming else 'applying'} ({defense.kind})")
        atomic_write_json(marker, {"fingerprint": key, "defense": defense.fingerprint(), "done": False})
        t = time.time()
        model_dir = defense.apply(folder)
        atomic_write_json(marker, {"fingerprint": key, "defense": defense.fingerprint(), "done": True,
                                   **_model_entry(model_dir, folder), "seconds": round(time.time() - t, 1)})
        if self.clock:
            self.clock.tick()  # an invocation stopped before any evaluation still counts its training
        return model_dir

    def _cell(self, folder: Path, key: dict, label: str, answer, evaluator: ModelEvaluator,
              extra: dict | None = None) -> dict:
        """One evaluation, in two steps that are each kept on disk: the model's answers (answers.json:
        training and generation, the expensive part) and their judgment (result.json), each with its own
        fingerprint (see `digests`): another judge, or a new version of it, judges the kept answers again.
        A result with failed judge calls is not done: the next run judges its kept answers again."""
        answer_digests, digest = self.digests(key)
        previous = _read_marker(folder / "result.json")
        if previous.get("fingerprint") == digest and not (previous.get("harm") or {}).get("failed"):
            print_line(f"{label}: done earlier - {_summary(previous)}")
            return previous
        t = time.time()
        answered = _read_marker(folder / "answers.json")
        if answered.get("fingerprint") not in answer_digests:
            answered = {**answer(), "fingerprint": answer_digests[0], "seconds": 0.0}
            answered["seconds"] = round(time.time() - t, 1)
            atomic_write_json(folder / "answers.json", answered)
        elif answered["fingerprint"] != answer_digests[0]:  # saved by an older sgt: keep them under their own key
            atomic_write_json(folder / "answers.json", {**answered, "fingerprint": answer_digests[0]})
        if answered.get("failed"):  # nothing to judge: the result says why (and counts as no rate at all)
            judged = {k: answered[k] for k in ("failed", "reason")} | {"harmful_rate": None, "benign_score": None}
        else:
            judged = evaluator.judge(answered)
        result = {**(extra or {}), **judged, "fingerprint": digest}
        result["seconds"] = round(answered["seconds"] + time.time() - t, 1)
        atomic_write_json(folder / "result.json", result)
        if self.clock:
            self.clock.tick()
        failed = (result.get("harm") or {}).get("failed")
        print_line(f"{label}: {_summary(result)} ({human_seconds(result['seconds'])})"
                   + (f" - {failed} judge call(s) failed" if failed else ""))
        return result

    def _attack_and_answer(self, model_dir: str, cell: Cell, cell_dir: Path, evaluator: ModelEvaluator) -> dict:
        """Attack, then answer. A diverged attack is recorded as failed and the run goes on with the rest
        of the grid: its model is broken, so it is neither evaluated nor ever counted as refusing."""
        out = cell_dir / "model"
        try:
            metrics = self.attacks[cell.kind].run(model_dir, cell, out)
        except TrainingDiverged as exc:
            return {"failed": "diverged", "reason": str(exc)}
        answered = evaluator.answer(str(out))
        # intermediate checkpoints (attack setting save_at_examples): one point each on a curve
        points = sorted(out.glob("at-*"), key=lambda p: int(p.name.split("-")[1]))
        if points:
            answered["curve"] = [{"examples": int(p.name.split("-")[1]), **evaluator.answer(str(p))} for p in points]
        answered["attack"] = {k: metrics.get(k) for k in ("rows", "steps", "first_loss", "last_loss", "seconds")}
        if not self.config.keep_models:
            shutil.rmtree(out, ignore_errors=True)
        return answered


def _name_of(folder: str, copies: dict) -> str:
    """The defense name of a copy's folder (NAME or NAME@seedK)."""
    return next(name for name, items in copies.items() if any(folder == f for f, _ in items))


def _read_marker(path: Path) -> dict:
    """A JSON state file, or {} when missing or damaged (then the work is simply redone)."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        print_line(f"warning: {path} is damaged (not a complete JSON object); recomputing it")
        return {}
    return data


def _summary(result: dict) -> str:
    if result.get("failed"):
        return f"failed ({result.get('reason') or result['failed']})"
    harmful = result.get("harmful_rate")
    benign = result.get("benign_score")
    text = f"harmful {harmful:.2f}" if harmful is not None else "harmful n/a"
    if benign is not None:
        text += f", benign {benign:.2f}"
    return text


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def run_from_cli(path: str, out: str, dry_run: bool = False, force: bool = False,
                 overrides: list[str] | None = None, show: bool = False, reuse: str | None = None,
                 gpu_memory: float = 80.0) -> dict | None:
    config = load_experiment(path, overrides)
    if show:
        print(show_config(config))
        return None
    if not out:
        raise UserError("no output folder given: pass --out DIR")
    experiment = Experiment(config, out)
    if dry_run:
        print(experiment.describe(gpu_memory=gpu_memory))
        if experiment.problems:
            print(f"{len(experiment.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in experiment.problems))
            raise UserError(f"the config has {len(experiment.problems)} problem(s), listed above")
        return None
    experiment.raise_problems()
    return run_experiment(config, out, force=force, experiment=experiment, reuse=reuse)


def _copy_folder(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """`source` as `target` (replaced) without the files named in `skip`, hard-linking where possible."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=link_or_copy, ignore=shutil.ignore_patterns(*skip))


def _model_entry(model_dir: str, folder: Path) -> dict:
    """defense.json's record of the defended model: relative to the defense folder when it lies inside
    it, so that the run folder can be moved, copied, or resumed from another working directory."""
    path = Path(model_dir)
    if path.exists() and path.resolve().is_relative_to(folder.resolve()):
        return {"model": path.resolve().relative_to(folder.resolve()).as_posix(), "model_in_folder": True}
    return {"model": model_dir}  # e.g. the base model itself (defense `none`): a hub name or path


def _model_path(state: dict, folder: Path) -> str:
    return str(folder / state["model"]) if state.get("model_in_folder") else state["model"]


def _same_config(saved: Path, config: ExperimentConfig) -> bool:
    """Whether the run folder's config.yaml is `config`. The saved file is read through the same
    dataclasses, so that a field added by a newer sgt (at its default) does not count as a change."""
    try:
        return to_dict(load_experiment(saved)) == to_dict(config)
    except UserError:  # a field this sgt no longer knows: a different config
        return False


def run_experiment(config: ExperimentConfig, out: str | Path, force: bool = False, experiment=None,
                   reuse: str | Path | None = None) -> dict:
    """Run (or resume) the experiment in `out`; returns the report summary. The folder is locked for
    the duration: a second `sgt run` on it stops with one line."""
    from ..lock import LOCK_FILE, folder_lock
    from ..utils import OUTPUT_MARKER, check_output

    out = Path(out)
    if reuse and not (Path(reuse) / "config.yaml").is_file():
        raise UserError(f"--reuse {reuse}: not an sgt run folder (it has no config.yaml); name a finished run's --out")
    experiment = experiment or Experiment(config, out)
    if (out / "config.yaml").is_file() and not (out / OUTPUT_MARKER).exists():
        (out / OUTPUT_MARKER).write_text("run", encoding="utf-8")  # a run folder of an older sgt
    check_output(out, "run", partial=False)
    created = not out.exists()
    try:
        with folder_lock(out):
            (out / OUTPUT_MARKER).write_text("run", encoding="utf-8")
            saved = out / "config.yaml"
            if saved.is_file() and not force and not _same_config(saved, config):
                raise UserError(f"{out} holds a run of a different config; use another --out, or pass --force to "
                                "reuse it (finished results that the change does not affect are kept)")
            experiment.clock = RunClock(out, experiment.world)
            evaluator = experiment.prepare()
            save_config(config, out)
            if reuse:
                models, results = experiment.reuse(Path(reuse))
                print_line(f"reused {models} defended model(s) and {results} result(s) from {reuse}")
            print_line(experiment.describe())
            summary = experiment.run(evaluator)
            summary["wall_seconds"] = experiment.clock.tick()
            return summary
    except UserError:
        # a run that failed on its input before writing anything leaves no folder behind
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {OUTPUT_MARKER, LOCK_FILE}:
            shutil.rmtree(out, ignore_errors=True)
        raise


class RunClock:
    """run.json's timing. Every invocation of `sgt run` on a folder is recorded and the current one is
    rewritten after every trained defense and finished evaluation, so the total is the compute time of
    the whole run (an interrupted invocation counted up to its last finished step). The world's build
    time is part of the invocation that built it; a reused world is recorded with its build time."""

    def __init__(self, out: Path, world: Path | None):
        self.path, self.world, self.start = Path(out) / "run.json", world, time.time()
        self.world_state = None if world is None else ("cached" if (world / "world.json").is_file() else "built")
        previous = read_json(self.path) if self.path.is_file() else {}
        self.earlier = [i for i in previous.get("invocations", []) if isinstance(i, dict)]
        if previous.get("wall_seconds") and not self.earlier:  # run.json of an older sgt: one invocation
            self.earlier = [{"wall_seconds": previous["wall_seconds"], "finished": previous.get("finished"),
                             "world": None}]

    def tick(self) -> float:
        """Rewrite run.json with the time so far; returns the total over every invocation."""
        now = {"wall_seconds": round(time.time() - self.start, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
               "world": self.world_state}
        invocations = [*self.earlier, now]
        build = None
        if self.world is not None and (self.world / "world.json").is_file():
            build = read_json(self.world / "world.json").get("build_seconds")
        total = round(sum(i.get("wall_seconds") or 0 for i in invocations), 1)
        atomic_write_json(self.path, {"wall_seconds": total, "invocations": invocations, "machine": machine_info(),
                                      "finished": now["finished"], "world_build_seconds": build})
        return total


def machine_info() -> str:
    import os
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    return f"{device}; Python {platform.python_version()}, torch {torch.__version__}"


def report_from_cli(run_dir: str, readme: str | None, assets: str, block: str = "demo-results",
                    command: str = "make demo") -> None:
    """`sgt report RUN_DIR`: rebuild the report from the result files (and refresh a README block);
    prints where they are (the numbers are in report.md and results.json, not on the terminal)."""
    from ..config import build_config
    from ..report import update_readme, write_report

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir} is not an `sgt run` folder (no config.yaml)")
    if readme and not Path(readme).is_file():  # checked before anything is written
        raise UserError(f"--readme {readme}: file not found (name the README whose results block is replaced)")
    config = build_config(ExperimentConfig, read_yaml(saved), where="experiment")
    write_report(run_dir, config, grid_cells(config.attack), defense_copies(config))
    print(f"report: {Path(run_dir) / 'report.md'} (data: results.json)")
    if readme:
        update_readme(run_dir, readme, assets, block, command)
        print(f"README block `{block}` of {readme} updated (plots in {assets})")
