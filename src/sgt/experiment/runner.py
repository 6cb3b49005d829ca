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
import shutil
import time
from pathlib import Path

from ..config import read_yaml, save_config, show_config, to_dict
from ..errors import IncompleteRun, TrainingDiverged, UserError
from ..utils import human_seconds, print_line
from .build import Experiment
from .clock import RunClock
from .config import ExperimentConfig, load_experiment
from .describe import describe
from .evaluation import ModelEvaluator
from .plan import Cell, defense_copies, grid_cells
from .store import read_marker


def run_grid(experiment: Experiment, evaluator: ModelEvaluator | None = None) -> dict:
    """Train, attack and evaluate what is not done yet, then write the report; returns its summary."""
    from ..report import write_report
    from ..utils import seed_everything

    start = time.time()
    out, store, keys = experiment.out, experiment.store, experiment.keys
    evaluator = evaluator or experiment.prepare()
    seed_everything(experiment.resolved.seed)
    # Each defense is trained just before its own evaluation and attacks, so that a run stopped
    # part-way leaves whole rows of results; only the defense whose trigger the drift probe uses
    # is trained first, because every evaluation measures drift.
    model_dirs: dict[str, str] = {}
    for defense in experiment.defenses:
        if experiment.drift_trigger is not None and \
                defense.trigger_path(out / "defenses" / defense.name) == experiment.drift_trigger:
            model_dirs[defense.name] = store.defended_model(defense, out / "defenses" / defense.name)
    evaluator.prepare_drift()
    cells = experiment.cells
    total = sum(1 + len(cells) * d.attacked for d in experiment.defenses)
    step = 0
    skip_broken = experiment.resolved.attack.skip_broken
    threshold = experiment.resolved.report.break_threshold
    for defense in experiment.defenses:
        if defense.name not in model_dirs:
            model_dirs[defense.name] = store.defended_model(defense, out / "defenses" / defense.name)
        model_dir = model_dirs[defense.name]
        step += 1
        trigger = defense.trigger_path(out / "defenses" / defense.name)
        defended = store.evaluate(out / "defenses" / defense.name, keys.release(defense),
                                  f"[{step}/{total}] {defense.name}, no attack",
                                  lambda md=model_dir, t=trigger: evaluator.answer(md, trigger=t), evaluator)
        broken = (defended.get("harmful_rate") or 0) >= threshold
        if defense.attacked and skip_broken and broken:
            step += len(cells)
            print_line(f"[{step}/{total}] {defense.name}: not attacked, harmful before any attack "
                       f"({defended['harmful_rate']:.2f} >= {threshold:.2f}; attack.skip_broken)")
            continue
        for cell in cells if defense.attacked else []:
            step += 1
            cell_dir = out / "attacks" / defense.name / cell.id
            label = f"[{step}/{total}] {defense.name}, shots={cell.shots} {cell.setting} seed={cell.seed}"
            store.evaluate(cell_dir, keys.cell(defense, cell), label,
                           lambda md=model_dir, cd=cell_dir, c=cell: attack_and_answer(experiment, md, c, cd, evaluator),
                           evaluator, extra={"defense": defense.name, "cell": dataclasses.asdict(cell),
                                             "setting": cell.setting})
    search = experiment.resolved.attack.search
    if search.trials:
        from .search import run_search

        floor = search.capability_floor or experiment.resolved.report.capability_floor
        for defense in experiment.defenses:
            if defense.name != first_copy(defense.name, experiment.copies):
                continue  # several defense seeds: the attacker searches against the first copy
            defended = read_marker(out / "defenses" / defense.name / "result.json")
            run_search(experiment, defense, model_dirs[defense.name], defended, evaluator, search, floor)
    summary = write_report(out, experiment.config, cells, experiment.copies)
    summary["seconds"] = round(time.time() - start, 1)
    print_line(f"done in {human_seconds(summary['seconds'])}: {out / 'report.md'}")
    raise_incomplete(experiment)
    return summary


def attack_and_answer(experiment: Experiment, model_dir: str, cell: Cell, cell_dir: Path,
                      evaluator: ModelEvaluator) -> dict:
    """Attack, then answer. A diverged attack is recorded as failed and the run goes on with the rest
    of the grid: its model is broken, so it is neither evaluated nor ever counted as refusing."""
    out = cell_dir / "model"
    try:
        metrics = experiment.attacks[cell.kind].run(model_dir, cell, out)
    except TrainingDiverged as exc:
        return {"failed": "diverged", "reason": str(exc)}
    answered = evaluator.answer(str(out), attacked=True)
    # intermediate checkpoints (attack setting save_at_examples): one point each on a curve
    points = sorted(out.glob("at-*"), key=lambda p: int(p.name.split("-")[1]))
    if points:
        answered["curve"] = [{"examples": int(p.name.split("-")[1]), **evaluator.answer(str(p), attacked=True)}
                             for p in points]
    answered["attack"] = {k: metrics.get(k) for k in ("rows", "steps", "first_loss", "last_loss", "seconds")}
    if not experiment.config.keep_models:
        shutil.rmtree(out, ignore_errors=True)
    return answered


def raise_incomplete(experiment: Experiment) -> None:
    """Exit code 1 (IncompleteRun) when the report lacks results: diverged attack cells (recorded, the
    rest of the grid ran) or failed judge calls (judged again by the next run)."""
    out = experiment.out
    folders = [out / "defenses" / d.name for d in experiment.defenses]
    folders += [out / "attacks" / d.name / c.id for d in experiment.defenses if d.attacked for c in experiment.cells]
    results = [(f, read_marker(f / "result.json")) for f in folders]  # this config's only, not stale ones
    diverged = [f.relative_to(out) for f, r in results if r.get("failed") == "diverged"]
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


def first_copy(folder: str, copies: dict) -> str:
    """The first trained copy of the defense whose copy's folder is `folder` (NAME or NAME@seedK)."""
    return next(items[0][0] for items in copies.values() if any(folder == f for f, _ in items))


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
        print(describe(experiment, gpu_memory=gpu_memory))
        if experiment.problems:
            print(f"{len(experiment.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in experiment.problems))
            raise UserError(f"the config has {len(experiment.problems)} problem(s), listed above")
        return None
    experiment.raise_problems()
    return run_experiment(config, out, force=force, experiment=experiment, reuse=reuse)


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
            clock = experiment.store.clock = RunClock(out, experiment.world)
            evaluator = experiment.prepare()
            save_config(config, out)
            if reuse:
                models, results = experiment.store.reuse(Path(reuse), experiment.defenses, experiment.cells)
                print_line(f"reused {models} defended model(s) and {results} result(s) from {reuse}")
            print_line(describe(experiment))
            summary = run_grid(experiment, evaluator)
            summary["wall_seconds"] = clock.tick()
            return summary
    except UserError:
        # a run that failed on its input before writing anything leaves no folder behind
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {OUTPUT_MARKER, LOCK_FILE}:
            shutil.rmtree(out, ignore_errors=True)
        raise


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
        update_readme(run_dir, config, readme, assets, block, command)
        print(f"README block `{block}` of {readme} updated (plots in {assets})")
