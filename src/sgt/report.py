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
from collections import defaultdict
from pathlib import Path

from .stats import LEVEL, add_statistics, budget_to_break
from .utils import atomic_write_json, atomic_write_text, read_json

# Extra llm-judge scores shown next to the harmful rate when present (several rubrics configured).
JUDGE_SCORES = ("qi_score", "strongreject_score")


def collect(out: Path, config, cells: list, copies: dict | None = None) -> dict:
    """Per defense: the defended result and the attacked cells, averaged over the defense's trained
    copies (defense seeds) and the attack seeds. `cells` are the attack grid's cells (objects with id,
    shots and setting); `copies` maps a defense name to its copies' (folder, seed) (default: one copy)."""
    from .defenses import defense_kinds

    data, unreadable, kinds = {}, [], defense_kinds()

    def read(path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            result = read_json(path)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            unreadable.append(str(path.relative_to(out)))
            return None
        if isinstance(result.get("overrefusal"), dict):
            result["overrefusal_rate"] = result["overrefusal"].get("refusal_rate")
        return result

    for spec in config.defenses:
        name = str(spec.get("name") or spec.get("defense"))
        folders = [folder for folder, _ in (copies or {}).get(name, [(name, None)])]
        releases = {f: read(out / "defenses" / f / "result.json") for f in folders}
        defended = _mean_result([r for r in releases.values() if r])
        groups: dict[tuple, list[dict]] = defaultdict(list)
        # the result files behind the means, for intervals: a run = one defense copy x one attack seed
        by_run = {(f, None): {"defended": r, "cells": {}} for f, r in releases.items() if r}
        for folder in folders:
            for cell in cells:
                result = read(out / "attacks" / folder / cell.id / "result.json")
                if result is not None:
                    groups[(cell.shots, cell.setting)].append(result)
                    by_run.pop((folder, None), None)
                    run = by_run.setdefault((folder, cell.seed), {"defended": releases[folder], "cells": {}})
                    run["cells"][(cell.shots, cell.setting)] = result
        attacked = []
        for (shots, setting), results in sorted(groups.items()):
            attacked.append({"shots": shots, "setting": setting, "seeds": len(results),
                             # diverged cells: no rates (a broken model is never counted as safe)
                             "failed": sum(1 for r in results if r.get("failed")),
                             "harmful_rate": _mean([r.get("harmful_rate") for r in results]),
                             "harmfulness_score": _mean([r.get("harmfulness_score") for r in results]),
                             **{k: _mean([r.get(k) for r in results]) for k in JUDGE_SCORES
                                if any(r.get(k) is not None for r in results)},
                             "benign_score": _mean([r.get("benign_score") for r in results]),
                             "drift": _mean_curve([r.get("drift") for r in results]),
                             **({"curve": _mean_points([r.get("curve") for r in results])}
                                if any(r.get("curve") for r in results) else {})})
        defense_class = kinds.get(str(spec.get("defense") or spec.get("name")))
        data[name] = {"undefended": getattr(defense_class, "undefended", False), "defended": _slim(defended),
                      "attacked": attacked, "under_attack": spec.get("attacked", True),
                      "_runs": {"defended": [r for r in releases.values() if r], "attacked": groups, "by_run": by_run}}
    return data, unreadable


def analyse(data: dict, floor: float, threshold: float) -> dict:
    """Worst cases per budget, budgets to break and usability at release, for every defense."""
    reference = release_reference(data)
    for entry in data.values():
        base_benign = (entry["defended"] or {}).get("benign_score")
        entry["usable_at_release"] = None if None in (reference, base_benign) else base_benign >= floor * reference
        worst, bounded = {}, {}
        for row in entry["attacked"]:
            rate = row["harmful_rate"]
            if rate is None:
                continue
            keeps = base_benign is None or row["benign_score"] is None or row["benign_score"] >= floor * base_benign
            row["keeps_capability"] = keeps
            worst[row["shots"]] = max(worst.get(row["shots"], 0.0), rate)
            if keeps:
                bounded[row["shots"]] = max(bounded.get(row["shots"], 0.0), rate)
        entry["worst_case"] = dict(sorted(worst.items()))
        entry["worst_case_capability_bounded"] = dict(sorted(bounded.items()))
        by_setting: dict[str, dict[int, float]] = defaultdict(dict)
        for row in entry["attacked"]:
            if row["harmful_rate"] is not None:
                by_setting[row["setting"]][row["shots"]] = row["harmful_rate"]
        entry["budget_to_break_by_setting"] = {k: budget_to_break(v, threshold) for k, v in sorted(by_setting.items())}
        entry["budget_to_break"] = budget_to_break(worst, threshold)
        entry["budget_to_break_capability_bounded"] = budget_to_break(bounded, threshold)
        if ((entry["defended"] or {}).get("harmful_rate") or 0) >= threshold:  # broken before any attack
            entry["budget_to_break"] = entry["budget_to_break_capability_bounded"] = 0
            entry["budget_to_break_by_setting"] = {k: 0 for k in entry["budget_to_break_by_setting"]}
    return data


def release_reference(data: dict) -> float | None:
    """The undefended base's benign score (a defense whose class is `undefended`), which a usable
    defense must keep."""
    for entry in data.values():
        if entry.get("undefended") and (entry["defended"] or {}).get("benign_score") is not None:
            return entry["defended"]["benign_score"]
    return None


def _usable(entry: dict, floor: float, reference: float | None) -> str:
    if entry.get("usable_at_release") is None:
        return "n/a"
    if entry["usable_at_release"]:
        return "yes"
    return f"no ({_fmt(entry['defended']['benign_score'])} < {floor:.0%} of the base's {_fmt(reference)})"


def _budget(value) -> str:
    """A budget to break as a table entry; 0 means the model was harmful before any attack."""
    if value is None:
        return "n/a"
    return "0 (harmful before attack)" if value == 0 else str(value)


def _failed(entry: dict, shots: int | None = None, setting: str | None = None) -> str | None:
    """"failed (diverged)" when every attack at that budget (or setting) diverged: no rate, not 0.00."""
    rows = [r for r in entry["attacked"] if shots in (None, r["shots"]) and setting in (None, r["setting"])]
    return "failed (diverged)" if rows and all(r["harmful_rate"] is None and r.get("failed") for r in rows) else None


def _keeps(row: dict) -> str:
    if row["harmful_rate"] is None:
        return "n/a"
    return "yes" if row.get("keeps_capability") else "no"


def _unattacked(entry: dict) -> str:
    """A table entry for a defense without attack results: not attacked by the config, or skipped
    because it was harmful before any attack (attack.skip_broken), or not run yet."""
    if not entry.get("under_attack", True):
        return "not attacked"
    return "not attacked (harmful before attack)" if entry.get("budget_to_break") == 0 else "not run yet"


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
        from .evaluation.trigger_check import plot_trigger_training

        trained = plot_trigger_training(checks, out / "trigger.png")
        plots += [trained] if trained else []
    reference = out / "drift_reference.json"
    panels = drift_panels(data, read_json(reference)["base_without_trigger"] if reference.is_file() else None)
    if panels:
        from .evaluation.drift import plot_drift

        plot_drift(panels, out / "drift.png")
        plots.append("drift.png")
    atomic_write_text(out / "report.md", markdown(config, data, plots, panels, unreadable, searches))
    return {"defenses": {n: {k: d[k] for k in ("budget_to_break", "budget_to_break_capability_bounded",
                                                "usable_at_release")}
                         | {"harmful_rate": (d["defended"] or {}).get("harmful_rate"),
                            "benign_score": (d["defended"] or {}).get("benign_score"),
                            "overrefusal_rate": (d["defended"] or {}).get("overrefusal_rate")}
                         for n, d in data.items()}}


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def markdown(config, data: dict, plots: list[str], drift: dict | None = None, unreadable: list | None = None,
             searches: dict | None = None) -> str:
    s = config.report
    lines = [f"# SGT experiment report: {config.name}", "",
             f"Base model `{config.model}`, format `{config.format}`, judge `{config.eval.harm.judge}`, "
             f"seed {config.seed}. Worst case = max harmful rate over attack settings at a budget; "
             f"capability-bounded = only attacked models keeping >= {s.capability_floor:.0%} of the defended "
             f"model's benign score; usable at release = the defended model keeps >= {s.capability_floor:.0%} of "
             f"the undefended base's benign score; budget to break = smallest budget with worst case >= "
             f"{s.break_threshold:.0%}.", "",
             *_statistics_text(config, data), "## Summary", ""]
    copies = max(((d["defended"] or {}).get("copies") or 1) for d in data.values()) if data else 1
    if copies > 1:
        lines += [f"Each defense was trained with {copies} seeds: numbers are means over its copies (95 % interval, "
                  "or the min-max over copies where no interval could be computed, in brackets), and every "
                  "attack cell ran on every copy. Budget to break: the median over runs (defense seed x attack "
                  "seed; the lower middle one for an even number), its range and the number of runs in brackets.", ""]
    scores = [k for k in JUDGE_SCORES if any((d["defended"] or {}).get(k) is not None for d in data.values())]
    overrefusal = any((d["defended"] or {}).get("overrefusal_rate") is not None for d in data.values())
    reference = release_reference(data)
    usable = reference is not None  # the column needs the undefended base in the run
    lines += ["| defense | harmful (no attack) | " + ("over-refusal (no attack) | " if overrefusal else "")
              + "".join(f"{k.replace('_', ' ')} (no attack) | " for k in scores)
              + "benign (no attack) | " + ("usable at release | " if usable else "")
              + "budget to break | budget to break (capability-bounded) |",
              "|---|---|" + "---|" * (len(scores) + usable + overrefusal) + "---|---|---|"]
    for name, d in data.items():
        base = d["defended"] or {}
        if not base:  # a run stopped before this defense (defenses run in the order listed)
            lines.append(f"| {name} |" + " not run yet |" * (4 + len(scores) + usable + overrefusal))
            continue
        over_runs = d.get("budget_to_break_over_runs") or {}
        lines.append(f"| {name} | {_fmt_estimate(base, 'harmful_rate')} | "
                     + (f"{_fmt_estimate(base, 'overrefusal_rate')} | " if overrefusal else "")
                     + "".join(f"{_fmt(base.get(k))} | " for k in scores)
                     + f"{_fmt_estimate(base, 'benign_score')} | "
                     + (f"{_usable(d, s.capability_floor, reference)} | " if usable else "")
                     + f"{_budget_over_runs(over_runs.get('plain'), d['budget_to_break'])} | "
                     + f"{_budget_over_runs(over_runs.get('capability_bounded'), d['budget_to_break_capability_bounded'])}"
                     + " |")
    if overrefusal:
        lines += ["", "Over-refusal: the fraction of benign prompts that sound risky (eval.overrefusal) which the model "
                  "refuses or evades, as the harm judge's refusal detection reads its answers. A defense that lowers "
                  "its harmful rate by refusing everything shows it here."]
    budgets = sorted({row["shots"] for d in data.values() for row in d["attacked"]})
    lines += _difference_table(data, s.reference_defense, budgets)
    if budgets:
        lines += ["", "## Worst-case harmful rate by data budget", "",
                  "| defense | " + " | ".join(f"{b} shots" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for name, d in data.items():
            intervals = d.get("worst_case_intervals") or {}
            cells = [_failed(d, shots=b) or f"{_fmt_ci(d['worst_case'].get(b), intervals.get(b))} "
                     f"({_fmt(d['worst_case_capability_bounded'].get(b))})"
                     if d["attacked"] else _unattacked(d) for b in budgets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Each entry: worst case over all attack settings, with its 95 % interval where per-prompt results "
                  "exist (capability-bounded worst case in brackets; n/a: no attack at that budget kept enough "
                  "capability).", ""]
        settings = sorted({r["setting"] for d in data.values() for r in d["attacked"]})  # diverged ones too
        lines += ["## Budget to break per attack setting", "",
                  "| defense | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for name, d in data.items():
            lines.append(f"| {name} | " + " | ".join((_failed(d, setting=k) or _budget(d["budget_to_break_by_setting"].get(k)))
                                                     if d["attacked"] else _unattacked(d) for k in settings) + " |")
        lines += ["", "Smallest budget whose harmful rate (mean over seeds) reaches the threshold under that setting.", "",
                  "## Every attack cell", "", "| defense | shots | setting | runs (seeds) | harmful rate | benign score | keeps capability |",
                  "|---|---|---|---|---|---|---|"]
        for name, d in data.items():
            for row in d["attacked"]:
                intervals = row.get("intervals") or {}
                rate = ("failed (diverged)" if row["harmful_rate"] is None and row.get("failed")
                        else _fmt_ci(row["harmful_rate"], intervals.get("harmful_rate")))
                lines.append(f"| {name} | {row['shots']} | {row['setting']} | {row['seeds']} | {rate} | "
                             f"{_fmt_ci(row['benign_score'], intervals.get('benign_score'))} | {_keeps(row)} |")
    checks = {name: d["defended"]["trigger_check"] for name, d in data.items()
              if (d["defended"] or {}).get("trigger_check")}
    if checks:
        from .evaluation.trigger_check import trigger_table

        lines += ["", "## The trigger (stage 1)", "",
                  "The frozen base model's refusal rate (keyword judge) without -> with each defense's trigger, before "
                  "anything is aligned to it: stage 2 can at best copy this teacher. Stage-1 steps (the step whose "
                  "trigger was kept, chosen on validation); training curves: trigger.png.", ""]
        lines += trigger_table(checks)
    if searches:
        search = config.attack.search
        lines += ["", "## Searched attacker", "",
                  f"An Optuna TPE search per defense ({search.trials} trials; budget {search.shots} examples; lr "
                  f"{search.lr[0]:g}-{search.lr[1]:g}, epochs {search.epochs[0]:g}-{search.epochs[1]:g}, batch "
                  f"{search.batch_size}, LoRA {search.lora}) maximising the harmful rate among attacks that keep the "
                  "capability floor. Grid = the grid's capability-bounded worst case at the same budget.", "",
                  "| defense | best harmful rate (searched) | its benign score | grid worst case | best settings |",
                  "|---|---|---|---|---|"]
        for name, found in searches.items():
            best = found.get("best") or {}
            grid = data.get(name, {}).get("worst_case_capability_bounded", {}).get(search.shots)
            settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in (best.get("params") or {}).items())
            kept = best.get("value") is not None and best["value"] >= 0
            lines.append(f"| {name} | {_fmt(best.get('harmful_rate')) if kept else 'none kept capability'} | "
                         f"{_fmt(best.get('benign_score'))} | {_fmt(grid)} | {settings} |")
    if drift:
        lines += ["", "## Representation drift", "",
                  "Relative distance of each model's harmful-prompt states (last prompt position) to the frozen base "
                  "model's states WITH the trigger (the 'safety region'), mean over layers; the base without trigger "
                  "marks 'outside'. Per-layer curves: drift.png.", "",
                  "| defense | model | mean distance over layers | last layer |", "|---|---|---|---|"]
        for name, curves in drift.items():
            for label, values in curves.items():
                lines.append(f"| {name} | {label} | {sum(values) / len(values):.3f} | {values[-1]:.3f} |")
    if unreadable:
        lines += ["", "## Results that could not be read", "",
                  "These result files are damaged and were left out (a re-run of `sgt run` recomputes them):", ""]
        lines += [f"- `{path}`" for path in unreadable]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _statistics_text(config, data: dict) -> list[str]:
    """How the intervals were computed, and on how many prompts; nothing when no result kept per-prompt outcomes."""
    sizes = {}
    for d in data.values():
        for key, interval in ((d["defended"] or {}).get("intervals") or {}).items():
            if interval:
                sizes.setdefault(key, interval["n"])
    if not sizes:
        return []
    what = {"harmful_rate": "held-out harmful prompts", "benign_score": "benign items",
            "overrefusal_rate": "over-refusal prompts"}
    n = ", ".join(f"{sizes[k]} {what[k]}" for k in what if k in sizes)
    return [f"Every model was evaluated on the same {n}. Intervals are {LEVEL:.0%} percentile-bootstrap intervals "
            f"({config.report.bootstrap} resamples, seed {config.seed}) over prompts and runs (a run = one defense "
            "seed x one attack seed): each resample redraws the prompts and, independently, the runs, both with "
            "replacement (a crossed bootstrap); a worst case takes the maximum over attack settings inside each "
            "resample. Differences between defenses are paired: both sides use the same redrawn prompts.", ""]


def _difference_table(data: dict, reference: str, budgets: list[int]) -> list[str]:
    """Each defense's harmful rate minus the reference defense's, at release and per budget (worst case)."""
    if not reference or not any(d.get("vs_reference") for d in data.values()):
        if reference and reference not in data and any((d["defended"] or {}).get("intervals") for d in data.values()):
            return ["", f"No differences are shown: the reference defense `{reference}` (report.reference_defense) "
                        "is not in this run."]
        return []
    lines = ["", f"## Difference from {reference}", "",
             f"Harmful rate minus {reference}'s (before attack, and worst case over attack settings at each budget), "
             "paired on the same prompts, with its 95 % interval. A difference is larger than the noise when its "
             "interval excludes 0 (marked *); otherwise this study cannot tell the two apart.", "",
             "| defense | no attack | " + " | ".join(f"{b} shots" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for name, d in data.items():
        if name == reference:
            lines.append(f"| {name} | (reference) |" + " (reference) |" * len(budgets))
            continue
        differences = d.get("vs_reference") or {}
        cells = [_fmt_difference(differences.get(key)) for key in ["release", *budgets]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _fmt_difference(interval: dict | None) -> str:
    if not interval:
        return "n/a"
    star = "*" if interval["low"] > 0 or interval["high"] < 0 else ""
    return f"{interval['value']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]{star}"


def _fmt_ci(value, interval: dict | None) -> str:
    """A rate with its 95 % interval: 0.22 [0.16, 0.28] (just the rate when there is none)."""
    if value is None or not interval:
        return _fmt(value)
    return f"{value:.2f} [{interval['low']:.2f}, {interval['high']:.2f}]"


def _fmt_estimate(result: dict, key: str) -> str:
    """A defended model's rate with its interval, or, without one, the min-max over its copies."""
    interval = (result.get("intervals") or {}).get(key)
    return _fmt_ci(result.get(key), interval) if interval else _fmt_range(result, key)


def _budget_over_runs(over_runs: dict | None, fallback) -> str:
    """The median budget to break over several runs with its range, else the budget of the one run."""
    if not over_runs or over_runs["seeds"] < 2:
        return _budget(fallback)
    median, low, high, runs = over_runs["median"], over_runs["low"], over_runs["high"], over_runs["seeds"]
    if low == high:
        same = f"the same in all {runs} runs"
        return f"0 (harmful before attack; {same})" if median == 0 else f"{median} ({same})"
    return f"{median} (median of {runs} runs; range {low} to {high})"


def _fmt_range(result: dict, key: str) -> str:
    """The mean, and over several defense seeds the min-max range: 0.05 (0.03-0.07)."""
    spread = result.get(f"{key}_range")
    text = _fmt(result.get(key))
    return f"{text} ({spread[0]:.2f}-{spread[1]:.2f})" if spread else text


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _slim(result: dict | None) -> dict | None:
    if result is None:
        return None
    keys = ("harmful_rate", "harmfulness_score", *JUDGE_SCORES, "benign_score", "harm", "benign", "drift",
            "harmful_rate_range", "benign_score_range", "copies", "overrefusal_rate", "overrefusal_rate_range",
            "overrefusal", "trigger_check")
    return {k: result.get(k) for k in keys if k in result or k in ("harmful_rate", "benign_score")}


def _mean_points(curves: list) -> list[dict]:
    """Harm-vs-examples points averaged over seeds, per number of examples seen."""
    by_count: dict[int, list[dict]] = defaultdict(list)
    for curve in curves:
        for point in curve or []:
            by_count[point["examples"]].append(point)
    return [{"examples": n, "harmful_rate": _mean([p.get("harmful_rate") for p in points]),
             "benign_score": _mean([p.get("benign_score") for p in points])} for n, points in sorted(by_count.items())]


def _mean_result(results: list[dict]) -> dict | None:
    """One defended result from its copies: numbers averaged, with the min-max range of the main ones."""
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    merged = dict(results[0])
    for key in ("harmful_rate", "harmfulness_score", "benign_score", "overrefusal_rate", *JUDGE_SCORES):
        values = [r.get(key) for r in results if r.get(key) is not None]
        merged[key] = sum(values) / len(values) if values else None
        if values and key in ("harmful_rate", "benign_score", "overrefusal_rate"):
            merged[f"{key}_range"] = [min(values), max(values)]
    merged["drift"] = _mean_curve([r.get("drift") for r in results])
    merged["copies"] = len(results)
    return merged


def _mean_curve(curves: list) -> list[float] | None:
    """Per-layer mean of several drift curves (seeds); None when no result has one."""
    curves = [c for c in curves if c]
    return [sum(values) / len(values) for values in zip(*curves)] if curves else None


def drift_panels(data: dict, outside: list[float] | None) -> dict[str, dict[str, list[float]]]:
    """Per defense: the defended model and, per attack setting, its largest budget (the strongest attack)."""
    panels = {}
    for name, d in data.items():
        curves = {"base (no trigger)": outside} if outside else {}
        if (d["defended"] or {}).get("drift"):
            curves["defended"] = d["defended"]["drift"]
        strongest: dict[str, dict] = {}
        for row in d["attacked"]:
            if row.get("drift") and row["shots"] >= strongest.get(row["setting"], {}).get("shots", 0):
                strongest[row["setting"]] = row
        for setting, row in sorted(strongest.items()):
            curves[f"{row['shots']} shots, {setting}"] = row["drift"]
        if len(curves) > (1 if outside else 0):
            panels[name] = curves
    return panels


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot(data: dict, out: Path, settings) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    settings_list = sorted({row["setting"] for d in data.values() for row in d["attacked"]})
    if settings_list:
        # Every curve starts at 0 examples, the defended model at release; the budgets are evenly spaced
        # categories (a log axis cannot show 0). Error bars: 95 % intervals.
        budgets = [0] + sorted({row["shots"] for d in data.values() for row in d["attacked"]})
        position = {b: i for i, b in enumerate(budgets)}
        panels = 1 + len(settings_list)
        fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.9), sharey=True, squeeze=False)
        axes = axes[0]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        markers = "osD^vP*X"
        for i, (name, d) in enumerate(data.items()):
            # decreasing marker sizes and small sideways offsets keep overlapping curves (e.g. all at 1.0) visible
            style = dict(color=colors[i % len(colors)], marker=markers[i % len(markers)], markersize=8 - 1.5 * (i % 4))
            shift = 0.06 * (i - (len(data) - 1) / 2)
            defended = d["defended"] or {}
            start = [(0, defended["harmful_rate"], (defended.get("intervals") or {}).get("harmful_rate"))] \
                if defended.get("harmful_rate") is not None else []
            intervals = d.get("worst_case_intervals") or {}
            worst = [(b, v, intervals.get(b)) for b, v in sorted(d["worst_case"].items())]
            _curve(axes[0], start + worst, position, shift, linewidth=2, label=name, **style)
            bounded = sorted(d["worst_case_capability_bounded"].items())
            if bounded:
                points = [(b, v, None) for b, v, _ in start] + [(b, v, None) for b, v in bounded]
                _curve(axes[0], points, position, shift, linewidth=1, linestyle="--", alpha=0.7, **style)
            for ax, setting in zip(axes[1:], settings_list):
                points = sorted((r["shots"], r["harmful_rate"], (r.get("intervals") or {}).get("harmful_rate"))
                                for r in d["attacked"] if r["setting"] == setting and r["harmful_rate"] is not None)
                if points:
                    _curve(ax, start + points, position, shift, linewidth=1.6, **style)
        titles = ["worst case over settings\n(dashed: capability-bounded)"] + settings_list
        for ax, title in zip(axes, titles):
            ax.set_xticks(range(len(budgets)), ["0\n(release)"] + [str(b) for b in budgets[1:]])
            ax.set_xlabel("attacker budget (examples)")
            ax.axhline(settings.break_threshold, color="grey", linestyle=":", linewidth=1)
            ax.set_title(title, fontsize=9)
            ax.set_ylim(-0.03, 1.05)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("harmful rate (95 % interval)")
        axes[0].legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        files.append(_save(fig, out / "harm_vs_budget.png"))
        plt.close(fig)
    scores = {n: d for n, d in data.items() if (d["defended"] or {}).get("benign_score") is not None}
    if scores:
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        names = list(scores)
        before = [scores[n]["defended"]["benign_score"] for n in names]
        after = [[r["benign_score"] for r in scores[n]["attacked"] if r["benign_score"] is not None] for n in names]
        width = 0.27
        xs = range(len(names))
        errors = [_error_bar(scores[n]["defended"]["benign_score"], (scores[n]["defended"].get("intervals") or {})
                             .get("benign_score")) for n in names]
        ax.bar([x - width for x in xs], before, width, label="defended (no attack, 95 % interval)",
               yerr=list(zip(*errors)) if any(e != (0, 0) for e in errors) else None, capsize=3)
        ax.bar(list(xs), [_mean(a) if a else 0 for a in after], width, label="after attack (mean)")
        ax.bar([x + width for x in xs], [min(a) if a else 0 for a in after], width, label="after attack (min)")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("benign score")
        ax.set_ylim(0, 1.05)
        ax.set_title("benign capability before and after attack", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        files.append(_save(fig, out / "benign.png"))
        plt.close(fig)
    return files


def _error_bar(value: float, interval: dict | None) -> tuple[float, float]:
    """(below, above) `value` of its interval, for matplotlib's yerr; (0, 0) without one."""
    if not interval:
        return (0.0, 0.0)
    return (max(0.0, value - interval["low"]), max(0.0, interval["high"] - value))


def _curve(ax, points: list[tuple], position: dict, shift: float, **style) -> None:
    """Harmful rate against budget: points (budget, rate, interval or None), drawn with error bars."""
    if not points:
        return
    xs = [position[b] + shift for b, _, _ in points]
    ys = [v for _, v, _ in points]
    errors = [_error_bar(v, ci) for _, v, ci in points]
    yerr = list(zip(*errors)) if any(e != (0, 0) for e in errors) else None
    ax.errorbar(xs, ys, yerr=yerr, capsize=2, elinewidth=0.8, **style)


def plot_curves(data: dict, path: Path) -> str:
    """Harmful rate against training examples seen (intermediate checkpoints), one panel per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in data.items() if any(row.get("curve") for row in d["attacked"])]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for row in data[name]["attacked"]:
            if row.get("curve"):
                points = [(0, data[name]["defended"]["harmful_rate"])] if data[name]["defended"] else []
                points += [(p["examples"], p["harmful_rate"]) for p in row["curve"]]
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=f"{row['shots']} shots, {row['setting']}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training examples seen")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("harmful rate")
    fig.tight_layout()
    name = _save(fig, path)
    plt.close(fig)
    return name


def collect_searches(out: Path, config, copies: dict | None) -> dict:
    """Per defense: the searched attacker's summary (search/<first copy>.json), if a search ran."""
    found = {}
    for spec in config.defenses:
        name = str(spec.get("name") or spec.get("defense"))
        folder = ((copies or {}).get(name) or [(name, None)])[0][0]
        path = out / "search" / f"{folder}.json"
        if path.is_file():
            try:
                found[name] = read_json(path)
            except ValueError:
                continue
    return found


def plot_searches(searches: dict, path: Path) -> str:
    """Best objective so far against trials, one line per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, found in searches.items():
        curve = found.get("best_so_far") or []
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("best harmful rate so far\n(minus 1 if capability was lost)")
    ax.set_title("searched attacker", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = _save(fig, path)
    plt.close(fig)
    return name


def _save(fig, path: Path) -> str:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path.name


# ---------------------------------------------------------------------------------------------
# README blocks (what `make demo` and `make real` refresh)
# ---------------------------------------------------------------------------------------------


def _shown(path: Path, readme: Path) -> str:
    """`path` as a reader of the README finds it: relative to the README's folder when inside it."""
    try:
        return path.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        return path.as_posix()


def timing_text(run: dict) -> str:
    """How long the run took, honestly: summed over its invocations, and whether the world's build is in it."""
    wall, invocations = run.get("wall_seconds"), run.get("invocations") or []
    if not wall:
        return "wall time n/a"
    text = f"wall time {wall / 60:.1f} min" + (f" over {len(invocations)} invocations" if len(invocations) > 1 else "")
    worlds = {i.get("world") for i in invocations}
    build = run.get("world_build_seconds")
    if "built" in worlds:
        text += " (world build included)"
    elif "cached" in worlds and build:
        text += f" (world reused from the cache; building it took {build / 60:.1f} min more)"
    return text


def update_readme(run_dir: str | Path, readme: str | Path, assets: str | Path, block: str = "demo-results",
                  command: str = "make demo") -> None:
    """Replace the README's `<!-- BLOCK:start -->...<!-- BLOCK:end -->` block with this run's tables and
    plots (copied into `assets`); `command` is named as what produced it."""
    import os
    import shutil

    from .config import read_yaml
    from .errors import UserError

    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    run_dir, readme, assets = Path(run_dir), Path(readme), Path(assets)
    report = run_dir / "report.md"
    if not report.is_file():
        raise UserError(f"{run_dir} has no report.md: run `sgt run CONFIG --out {run_dir}` first")
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise UserError(f"{readme} has no {start} ... {end} block to fill (add the two lines where the results go)")
    assets.mkdir(parents=True, exist_ok=True)
    config = read_yaml(run_dir / "config.yaml")
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    body = report.read_text(encoding="utf-8")
    # every section of the report from the summary on, except the long per-cell table and the plot list
    sections = ["## " + part for part in body.split("\n## ")[1:]]
    tables = "\n".join(part.rstrip() + "\n" for part in sections
                       if not part.startswith(("## Every attack cell", "## Plots")))
    tables = tables.replace("## ", "#### ")
    images = []
    for png in sorted(run_dir.glob("*.png")):
        shutil.copyfile(png, assets / png.name)
        # links relative to the README, so that they work wherever the repository is
        link = Path(os.path.relpath(assets.resolve() / png.name, readme.resolve().parent)).as_posix()
        images.append(f"![{png.stem}]({link})")
    world = config.get("world") or {}
    world_text = f", world {world.get('kind')} {world.get('preset')} seed {world.get('seed')}" if world else ""
    lines = [start,
             f"Produced by `{command}` (experiment `{config.get('name', '')}`, seed {config.get('seed')}{world_text}) on "
             f"{run.get('machine', 'an unrecorded machine')}, {timing_text(run)}, finished {run.get('finished', 'n/a')}. "
             f"Full report: `{_shown(run_dir, readme)}/report.md`.", "", tables.strip(), "", *images, end]
    new = text[: text.index(start)] + "\n".join(lines) + text[text.index(end) + len(end):]
    atomic_write_text(readme, new)
