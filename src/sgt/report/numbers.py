"""The report's numbers, from the result files of a run: per defense the defended result and the attacked
cells averaged over seeds and copies, worst cases, budgets to break, usability at release and the searched
attacker's summaries (everything results.json holds; intervals are added by sgt.stats)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..defenses import DEFENSES, DefenseSpec
from ..stats import budget_to_break
from ..utils import read_json

# Extra llm-judge scores shown next to the harmful rate when present (several rubrics configured).
JUDGE_SCORES = ("qi_score", "strongreject_score")


def collect(out: Path, config, cells: list, copies: dict | None = None) -> dict:
    """Per defense: the defended result and the attacked cells, averaged over the defense's trained
    copies (defense seeds) and the attack seeds. `cells` are the attack grid's cells (objects with id,
    shots and setting); `copies` maps a defense name to its copies' (folder, seed) (default: one copy)."""
    data, unreadable, kinds = {}, [], DEFENSES.all()

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

    for spec in map(DefenseSpec.of, config.defenses):
        name = spec.name
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
        defense_class = kinds.get(spec.kind)
        data[name] = {"undefended": getattr(defense_class, "undefended", False), "defended": _slim(defended),
                      "attacked": attacked, "under_attack": spec.attacked,
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



def collect_searches(out: Path, config, copies: dict | None) -> dict:
    """Per defense: the searched attacker's summary (search/<first copy>.json), if a search ran."""
    found = {}
    for name in (DefenseSpec.of(entry).name for entry in config.defenses):
        folder = ((copies or {}).get(name) or [(name, None)])[0][0]
        path = out / "search" / f"{folder}.json"
        if path.is_file():
            try:
                found[name] = read_json(path)
            except ValueError:
                continue
    return found


# Per defense, the entries keyed by budget: JSON keeps their keys as text, the report's numbers as integers.
BUDGET_KEYED = ("worst_case", "worst_case_capability_bounded", "worst_case_intervals", "vs_reference")


def load_results(run_dir: Path) -> dict:
    """results.json as `write_report` computed it (budgets as integers again)."""
    results = read_json(Path(run_dir) / "results.json")
    for entry in results["defenses"].values():
        for key in BUDGET_KEYED:
            if isinstance(entry.get(key), dict):
                entry[key] = {int(k) if k.isdigit() else k: v for k, v in entry[key].items()}
    return results


def drift_outside(run_dir: Path) -> list[float] | None:
    """The base's drift without the trigger ("outside" the safety region), when the run measured drift."""
    reference = Path(run_dir) / "drift_reference.json"
    return read_json(reference)["base_without_trigger"] if reference.is_file() else None
