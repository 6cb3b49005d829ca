"""`sgt run`: one YAML config -> defenses x attack grid x evaluation -> report (resumable).

    config.py      the schema (typed sections, a help string per field; `sgt run CONFIG --show`)
    plan.py        the attack grid's cells and the fingerprints that decide what is done
    evaluation.py  evaluating one model: harm, benign capability, drift
    runner.py      the run loop (skips finished cells, resumes defenses), the CLI entry points
"""

from .config import AttackGrid, EvalSettings, ExperimentConfig, ReportSettings, load_experiment
from .plan import Cell, grid_cells
from .runner import Experiment, report_from_cli, run_experiment, run_from_cli

__all__ = ["AttackGrid", "Cell", "EvalSettings", "Experiment", "ExperimentConfig", "ReportSettings", "grid_cells",
           "load_experiment", "report_from_cli", "run_experiment", "run_from_cli"]
