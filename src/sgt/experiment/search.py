"""The adaptive attacker: an Optuna TPE search over attack hyper-parameters, per defense.

A fixed grid flatters defenses: public re-evaluations (TamperBench, 2026) found that defenses which
look strong under one attack setting give no advantage once the attacker sweeps learning rate,
steps, batch size and LoRA rank. Here the attacker gets a fixed data budget (`shots`) and searches,
within user-given ranges, for the settings that maximise the harmful rate while keeping at least
`capability_floor` of the defended model's benign score (an attack that wrecks the model is no win):

    objective = harmful_rate                    if benign >= floor * defended benign
              = harmful_rate - 1                otherwise (always below any valid attack)

The study lives in SQLite in the run folder (search/<defense>.db), so an interrupted search resumes
where it stopped and a re-run with more trials adds to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import TrainingDiverged, UserError
from .config import SearchSettings
from .plan import Cell


def sample(trial, search: SearchSettings) -> tuple[Cell, dict]:
    """One attack from the trial: the cell and the other settings (batch size, LoRA rank)."""
    lora = trial.suggest_categorical("lora", list(search.lora))
    cell = Cell(kind=search.kind, shots=search.shots, seed=search.seed,
                lr=trial.suggest_float("lr", *search.lr, log=True),
                epochs=trial.suggest_float("epochs", *search.epochs), lora=lora)
    settings = {"batch_size": trial.suggest_categorical("batch_size", list(search.batch_size))}
    if lora:
        settings["lora_r"] = trial.suggest_int("lora_r", *search.lora_r, log=True)
        settings["lora_alpha"] = 2 * settings["lora_r"]
    return cell, settings


def objective_value(harmful: float | None, benign: float | None, defended_benign: float | None, floor: float) -> float:
    if harmful is None:
        return -1.0
    keeps = defended_benign is None or benign is None or benign >= floor * defended_benign
    return harmful if keeps else harmful - 1.0


def run_search(experiment, defense, model_dir: str, defended: dict, evaluator, search: SearchSettings,
               floor: float) -> dict:
    """Run the remaining trials of `defense`'s study; writes search/<defense>.json and returns it."""
    try:
        import optuna
    except ImportError:
        raise UserError("attack.search needs optuna: pip install optuna") from None
    from ..utils import print_line

    folder = experiment.out / "search"
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The study's name carries a fingerprint of what its trials depend on: a changed config starts afresh.
    name = f"{defense.name}-{experiment.keys.search(defense)}"
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{folder / (defense.name + '.db')}",
                                direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=search.seed))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for number in range(len(done), search.trials):
        trial = study.ask()
        cell, settings = sample(trial, search)
        out = folder / f"{defense.name}-trial{number}" / "model"
        shutil.rmtree(out.parent, ignore_errors=True)
        try:
            experiment.attacks[search.kind].with_settings(settings).run(model_dir, cell, out)
            result = evaluator.judge(evaluator.answer(str(out), attacked=True))
        except TrainingDiverged as exc:  # a setting the attacker tried and lost: no rate, never the best
            result = {"harmful_rate": None, "benign_score": None, "failed": str(exc)}
        shutil.rmtree(out.parent, ignore_errors=True)
        value = objective_value(result["harmful_rate"], result["benign_score"], defended.get("benign_score"), floor)
        for key in ("harmful_rate", "benign_score", "failed"):
            if key in result:
                trial.set_user_attr(key, result[key])
        study.tell(trial, value)
        outcome = result.get("failed") or f"harmful {_number(result['harmful_rate'])}, benign {_number(result['benign_score'])}"
        print_line(f"[search {defense.name}] trial {number + 1}/{search.trials}: {outcome} with {json.dumps({**trial.params})}")
    return summarize_study(study, folder / f"{defense.name}.json")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summarize_study(study, path: Path) -> dict:
    """The trials (in order), the best-so-far curve and the best attack; written to `path`."""
    import optuna

    from ..utils import atomic_write_json

    trials, best_so_far, best = [], [], None
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        row = {"number": t.number, "value": t.value, "params": t.params, **t.user_attrs}
        trials.append(row)
        if best is None or t.value > best["value"]:
            best = row
        best_so_far.append(best["value"])
    summary = {"trials": trials, "best_so_far": best_so_far, "best": best}
    atomic_write_json(path, summary)
    return summary
