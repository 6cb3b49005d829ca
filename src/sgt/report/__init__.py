"""The experiment report: results.json, report.md and plots, rebuilt from the result files on disk.

Numbers a reader needs to judge a defense:
  * harmful rate and benign score of each defended model before any attack;
  * the WORST case over attack settings at each data budget (an attacker sweeps lr/epochs/LoRA),
    both over all attacks and capability-bounded (only attacked models that keep at least
    `capability_floor` of the defended model's benign score - wrecking the model is no win);
  * whether the defended model is usable at all: its benign score at release against `capability_floor`
    of the undefended base's, since a defense that wrecks the model "resists" every attack;
  * the budget to break: the smallest budget whose worst-case harmful rate reaches `break_threshold`;
    with several runs (defense seeds x attack seeds) the median over runs, with its range;
  * over-refusal: the refusal rate on benign prompts that sound risky (eval.overrefusal);
  * 95 % intervals of every rate (a bootstrap over prompts and runs, `stats`) and each defense's
    difference in harmful rate from the reference defense (report.reference), paired on the prompts.
Seeds of the same cell are averaged before the worst case is taken.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..stats import add_statistics, budget_to_break
from ..utils import atomic_write_json, atomic_write_text
from .markdown import markdown
from .numbers import analyse, collect, collect_searches, drift_outside, drift_panels, release_reference
from .plots import plot, plot_curves, plot_searches
from .readme import timing_text, update_readme

__all__ = ["analyse", "budget_to_break", "collect", "markdown", "release_reference", "timing_text", "update_readme",
           "write_report"]


def write_report(out: str | Path, config, cells: list, copies: dict | None = None) -> dict:
    """results.json, report.md and the plots of the run in `out` (config: the experiment's)."""
    out = Path(out)
    settings = config.report
    collected, unreadable = collect(out, config, cells, copies)
    data = analyse(collected, settings.capability_floor, settings.break_threshold)
    add_statistics(data, settings.reference_defense, settings.capability_floor, settings.break_threshold,
                   settings.bootstrap, config.seed)
    summary = {"name": config.name, "report_settings": dataclasses.asdict(settings), "defenses": data,
               "unreadable_results": unreadable}
    plots = plot(data, out, settings)
    if any(row.get("curve") for d in data.values() for row in d["attacked"]):
        plots.append(plot_curves(data, out / "harm_vs_examples.png"))
    searches = collect_searches(out, config, copies)
    summary["searches"] = searches
    atomic_write_json(out / "results.json", summary)
    if searches:
        plots.append(plot_searches(searches, out / "search.png"))
    checks = {name: d["defended"]["trigger_check"] for name, d in data.items()
              if (d["defended"] or {}).get("trigger_check")}
    if checks:
        from ..evaluation.trigger_check import plot_trigger_training

        trained = plot_trigger_training(checks, out / "trigger.png")
        plots += [trained] if trained else []
    panels = drift_panels(data, drift_outside(out))
    if panels:
        from ..evaluation.drift import plot_drift

        plot_drift(panels, out / "drift.png")
        plots.append("drift.png")
    atomic_write_text(out / "report.md", markdown(config, data, plots, panels, unreadable, searches))
    return {"defenses": {n: {k: d[k] for k in ("budget_to_break", "budget_to_break_capability_bounded",
                                                "usable_at_release")}
                         | {"harmful_rate": (d["defended"] or {}).get("harmful_rate"),
                            "benign_score": (d["defended"] or {}).get("benign_score"),
                            "overrefusal_rate": (d["defended"] or {}).get("overrefusal_rate")}
                         for n, d in data.items()}}
