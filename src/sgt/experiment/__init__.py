"""`sgt run`: one YAML config -> defenses x attack grid x evaluation -> report (resumable).

    config.py      the schema (typed sections, a help string per field; `sgt run CONFIG --show`)
    plan.py        the attack grid's cells, the defense copies and the fingerprints that decide what is done
    build.py       Experiment: the config built into typed defenses, attacks and cells; every problem found
                   before any weight is loaded
    store.py       the run folder as a result store: defended models and evaluations with their fingerprints
    evaluation.py  evaluating one model: harm, benign capability, drift
    search.py      the searched attacker (Optuna)
    runner.py      the run loop (skips finished cells, resumes defenses), the CLI entry points
    describe.py    the plan as text (`--dry-run`)
    clock.py       run.json: the run's wall time over every invocation
"""

from .build import Experiment
from .config import AttackGrid, EvalSettings, ExperimentConfig, ReportSettings, load_experiment
from .plan import Cell, grid_cells
from .runner import report_from_cli, run_experiment, run_from_cli

__all__ = ["AttackGrid", "Cell", "EvalSettings", "Experiment", "ExperimentConfig", "ReportSettings", "grid_cells",
           "load_experiment", "report_from_cli", "run_experiment", "run_from_cli"]
