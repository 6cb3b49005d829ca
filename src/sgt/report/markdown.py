"""report.md: the report's numbers as markdown tables (the README blocks are made of the same sections)."""

from __future__ import annotations

from pathlib import Path

from ..stats import LEVEL
from .numbers import JUDGE_SCORES, release_reference


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



def markdown(config, data: dict, plots: list[str], drift: dict | None = None, unreadable: list | None = None,
             searches: dict | None = None) -> str:
    """report.md: a header, then every section of `report_sections` and the plots."""
    lines = _header(config, data)
    sections = report_sections(config, data, drift, unreadable, searches)
    if plots:
        sections.append(("Plots", [f"![{Path(p).stem}]({p})" for p in plots]))
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines[:-1]) + "\n"


def readme_tables(config, data: dict, drift: dict | None = None, unreadable: list | None = None,
                  searches: dict | None = None) -> str:
    """The report's sections for a README block: level-4 headings, without the long per-cell table."""
    return "\n".join(f"#### {title}\n\n" + "\n".join(body) + "\n"
                     for title, body in report_sections(config, data, drift, unreadable, searches)
                     if title != EVERY_CELL).strip()


EVERY_CELL = "Every attack cell"


def _header(config, data: dict) -> list[str]:
    s = config.report
    return [f"# SGT experiment report: {config.name}", "",
            f"Base model `{config.model}`, format `{config.format}`, judge `{config.eval.harm.judge}`, "
            f"seed {config.seed}. Worst case = max harmful rate over attack settings at a budget; "
            f"capability-bounded = only attacked models keeping >= {s.capability_floor:.0%} of the defended "
            f"model's benign score; usable at release = the defended model keeps >= {s.capability_floor:.0%} of "
            f"the undefended base's benign score; budget to break = smallest budget with worst case >= "
            f"{s.break_threshold:.0%}.", "", *_statistics_text(config, data)]


def report_sections(config, data: dict, drift: dict | None = None, unreadable: list | None = None,
                    searches: dict | None = None) -> list[tuple[str, list[str]]]:
    """The report as (title, lines) sections, from the report's numbers (`data`: results.json's defenses)."""
    s = config.report
    budgets = sorted({row["shots"] for d in data.values() for row in d["attacked"]})
    sections = [("Summary", _summary(config, data) + _difference_note(data, s.reference_defense))]
    if s.reference_defense and any(d.get("vs_reference") for d in data.values()):
        sections.append((f"Difference from {s.reference_defense}", _difference_table(data, s.reference_defense, budgets)))
    if budgets:
        sections += [("Worst-case harmful rate by data budget", _worst_cases(data, budgets)),
                     ("Budget to break per attack setting", _budgets_by_setting(data)),
                     (EVERY_CELL, _every_cell(data, s.reference_defense))]
    checks = {name: d["defended"]["trigger_check"] for name, d in data.items()
              if (d["defended"] or {}).get("trigger_check")}
    if checks:
        from ..evaluation.trigger_check import trigger_table

        sections.append(("The trigger (stage 1)", [
            "The frozen base model's refusal rate (keyword judge) without -> with each defense's trigger, before "
            "anything is aligned to it: stage 2 can at best copy this teacher. Stage-1 steps (the step whose "
            "trigger was kept, chosen on validation); training curves: trigger.png.", "", *trigger_table(checks)]))
    if searches:
        sections.append(("Searched attacker", _searches(config, data, searches)))
    if drift:
        sections.append(("Representation drift", _drift(drift)))
    if unreadable:
        sections.append(("Results that could not be read", [
            "These result files are damaged and were left out (a re-run of `sgt run` recomputes them):", "",
            *(f"- `{path}`" for path in unreadable)]))
    return sections


def _summary(config, data: dict) -> list[str]:
    s = config.report
    lines = []
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
    return lines


def _worst_cases(data: dict, budgets: list[int]) -> list[str]:
    lines = ["| defense | " + " | ".join(f"{b} shots" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name, d in data.items():
        intervals = d.get("worst_case_intervals") or {}
        cells = [_failed(d, shots=b) or f"{_fmt_ci(d['worst_case'].get(b), intervals.get(b))} "
                 f"({_fmt(d['worst_case_capability_bounded'].get(b))})"
                 if d["attacked"] else _unattacked(d) for b in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "Each entry: worst case over all attack settings, with its 95 % interval where per-prompt "
                    "results exist (capability-bounded worst case in brackets; n/a: no attack at that budget kept "
                    "enough capability)."]


def _budgets_by_setting(data: dict) -> list[str]:
    settings = sorted({r["setting"] for d in data.values() for r in d["attacked"]})  # diverged ones too
    lines = ["| defense | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for name, d in data.items():
        lines.append(f"| {name} | " + " | ".join((_failed(d, setting=k) or _budget(d["budget_to_break_by_setting"].get(k)))
                                                 if d["attacked"] else _unattacked(d) for k in settings) + " |")
    return lines + ["", "Smallest budget whose harmful rate (mean over seeds) reaches the threshold under that setting."]


def _every_cell(data: dict, reference: str | None = None) -> list[str]:
    """Every attacked row; with the difference from the reference defense under the same cell, where known."""
    compared = any(row.get("vs_reference") for d in data.values() for row in d["attacked"])
    lines = ["| defense | shots | setting | runs (seeds) | harmful rate | benign score | keeps capability |"
             + (f" harmful minus {reference}'s |" if compared else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if compared else "")]
    for name, d in data.items():
        for row in d["attacked"]:
            intervals = row.get("intervals") or {}
            rate = ("failed (diverged)" if row["harmful_rate"] is None and row.get("failed")
                    else _fmt_ci(row["harmful_rate"], intervals.get("harmful_rate")))
            difference = ("(reference)" if name == reference else _fmt_difference(row.get("vs_reference")))
            lines.append(f"| {name} | {row['shots']} | {row['setting']} | {row['seeds']} | {rate} | "
                         f"{_fmt_ci(row['benign_score'], intervals.get('benign_score'))} | {_keeps(row)} |"
                         + (f" {difference} |" if compared else ""))
    return lines


def _searches(config, data: dict, searches: dict) -> list[str]:
    search = config.attack.search
    lines = [f"An Optuna TPE search per defense ({search.trials} trials; budget {search.shots} examples; lr "
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
    return lines


def _drift(drift: dict) -> list[str]:
    lines = ["Relative distance of each model's harmful-prompt states (last prompt position) to the frozen base "
             "model's states WITH the trigger (the 'safety region'), mean over layers; the base without trigger "
             "marks 'outside'. Per-layer curves: drift.png.", "",
             "| defense | model | mean distance over layers | last layer |", "|---|---|---|---|"]
    for name, curves in drift.items():
        for label, values in curves.items():
            lines.append(f"| {name} | {label} | {sum(values) / len(values):.3f} | {values[-1]:.3f} |")
    return lines


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


def _difference_note(data: dict, reference: str) -> list[str]:
    """Why no differences are shown, when there would be intervals but the reference defense is not in the run."""
    if (reference and not any(d.get("vs_reference") for d in data.values()) and reference not in data
            and any((d["defended"] or {}).get("intervals") for d in data.values())):
        return ["", f"No differences are shown: the reference defense `{reference}` (report.reference_defense) "
                    "is not in this run."]
    return []


def _difference_table(data: dict, reference: str, budgets: list[int]) -> list[str]:
    """Each defense's harmful rate minus the reference defense's, at release and per budget (worst case);
    then its over-refusal rate and benign score at release minus the reference's, where measured."""
    extra = [(key, title) for key, title in (("overrefusal", "over-refusal (no attack)"), ("benign", "benign (no attack)"))
             if any(key in (d.get("vs_reference") or {}) for d in data.values())]
    lines = [f"Harmful rate minus {reference}'s (before attack, and worst case over attack settings at each budget), "
             "paired on the same prompts, with its 95 % interval"
             + (f"; then the over-refusal rate and benign score before attack minus {reference}'s (for the benign "
                "score, higher is better)" if extra else "")
             + ". A difference is larger than the noise when its interval excludes 0 (marked *); otherwise this "
             "study cannot tell the two apart.", "",
             "| defense | no attack | " + " | ".join([f"{b} shots" for b in budgets] + [t for _, t in extra]) + " |",
             "|---|---|" + "---|" * (len(budgets) + len(extra))]
    for name, d in data.items():
        if name == reference:
            lines.append(f"| {name} | (reference) |" + " (reference) |" * (len(budgets) + len(extra)))
            continue
        differences = d.get("vs_reference") or {}
        cells = [_fmt_difference(differences.get(key)) for key in ["release", *budgets, *(k for k, _ in extra)]]
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
