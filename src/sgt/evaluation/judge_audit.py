"""How often a judge agrees with human labels: `sgt judge audit --judge NAME [--judge-options ...]`.

The label sets are pyrit's human-labelled scorer evaluation sets, read from the installed `pyrit`
package (never imported; SGT_PYRIT_DIR points at a folder in the same layout instead):
  refusal        datasets/scorer_evals/refusal_scorer/refusal.csv        105 answers, human_score 1 = refused
  refusal_extra  datasets/scorer_evals/refusal_scorer/refusal_extra.csv   64 answers, the same labels
  objective      datasets/scorer_evals/objective/*.csv                   395 request/answer pairs,
                                                                          human_score 1 = the harmful
                                                                          objective was achieved
pyrit labels an off-topic answer (one that ignores the request) as a refusal, too.

Each pair goes through the judge exactly as `sgt eval harm` sends it, and the judge's `harmful`
verdict - what the harmful rate counts - is compared with the humans': on the refusal sets an answer
is harmful when the humans say it did NOT refuse, on the objective set when the objective was
achieved. Positive = harmful, so a false positive is harm the humans did not see (the judge
over-counts harm), a false negative harm it missed. Items the judge gave no verdict (unparsed,
failed) are counted and left out of the rates.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..config import cfg, save_config
from ..errors import UserError
from ..judges.fields import JudgeFields

PYRIT_INSTALL = "pip install --no-deps pyrit==1.1.0  (only its data files are read)"
SCORER_EVALS = "datasets/scorer_evals"


@dataclass
class LabelSet:
    files: str            # a file or a glob under pyrit's scorer_evals folder
    harmful_label: str    # the human_score that means "harmful" (the judge's positive class)
    about: str            # what the humans labelled


LABEL_SETS = {
    "refusal": LabelSet("refusal_scorer/refusal.csv", "0", "did the answer refuse (or ignore) the request"),
    "refusal_extra": LabelSet("refusal_scorer/refusal_extra.csv", "0", "the same, a second sample"),
    "objective": LabelSet("objective/*.csv", "1", "did the answer achieve the harmful objective"),
}


@dataclass
class LabelledAnswer:
    prompt: str
    response: str
    harmful: bool          # the humans' verdict, in the judge's terms
    category: str          # the file it came from (objective: the harm category)


@dataclass
class JudgeAuditConfig(JudgeFields):
    sets: list[str] = cfg(list(LABEL_SETS), "Label sets to score the judge on: " + ", ".join(LABEL_SETS) + ".")
    out: str = cfg("", "Optional output folder: audit.md (the table), metrics.json, items.jsonl (every item with "
                       "the humans' and the judge's verdicts), config.yaml.")
    progress: bool = cfg(True, "Show progress bars (llm and classifier judges).")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub for a classifier judge (off: safer).")

    def __post_init__(self):
        super().__post_init__()
        unknown = [s for s in self.sets if s not in LABEL_SETS]
        if unknown or not self.sets:
            raise UserError(f"unknown label set(s) {unknown or '(none given)'}: use any of {', '.join(LABEL_SETS)}")


# ---------------------------------------------------------------------------------------------
# Reading the label sets
# ---------------------------------------------------------------------------------------------


def read_label_file(path: Path, harmful_label: str) -> list[LabelledAnswer]:
    """One pyrit CSV: leading `# dataset_version=...` comment lines, then objective, assistant_response,
    human_score (0/1), data_type (text only) and, in objective files, harm_category."""
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    rows = list(csv.DictReader(io.StringIO("".join(lines))))
    needed = {"objective", "assistant_response", "human_score"}
    if not rows or not needed <= set(rows[0]):
        raise UserError(f"{path} is not a pyrit label file (columns {', '.join(sorted(needed))} expected); "
                        f"reinstall it: {PYRIT_INSTALL}")
    items = []
    for number, row in enumerate(rows, start=1):
        if row.get("data_type", "text") != "text":
            continue  # images and audio: nothing a text judge can score
        score = (row["human_score"] or "").strip()
        if score not in ("0", "1"):
            raise UserError(f"{path}: row {number} has human_score={row['human_score']!r}; expected 0 or 1")
        items.append(LabelledAnswer(row["objective"], row["assistant_response"], score == harmful_label,
                                    row.get("harm_category") or path.stem))
    return items


def load_label_set(name: str) -> list[LabelledAnswer]:
    from ..packages import package_dir

    spec = LABEL_SETS[name]
    folder = package_dir("pyrit", PYRIT_INSTALL) / SCORER_EVALS
    files = sorted(folder.glob(spec.files))
    if not files:
        raise UserError(f"no {spec.files} under {folder}; reinstall pyrit: {PYRIT_INSTALL}")
    return [item for path in files for item in read_label_file(path, spec.harmful_label)]


# ---------------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------------


def agreement(truth: list[bool], predicted: list[bool | None], resamples: int = 1000, seed: int = 0) -> dict:
    """Accuracy (with a 95 % bootstrap interval over items), false-positive and false-negative rates and
    Cohen's kappa of `predicted` against `truth` (positive = harmful); None predictions are left out."""
    import numpy as np

    from ..stats import Bootstrap

    pairs = [(t, p) for t, p in zip(truth, predicted) if p is not None]
    tp = sum(t and p for t, p in pairs)
    tn = sum(not t and not p for t, p in pairs)
    fp = sum(p and not t for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    n = len(pairs)
    out = {"n": len(truth), "no_verdict": len(truth) - n, "harmful_per_humans": sum(truth),
           "tp": tp, "tn": tn, "fp": fp, "fn": fn, "accuracy": None, "accuracy_interval": None,
           "fpr": fp / (fp + tn) if fp + tn else None, "fnr": fn / (fn + tp) if fn + tp else None, "kappa": None}
    if not n:
        return out
    correct = np.array([[float(t == p) for t, p in pairs]])
    interval = Bootstrap(n, resamples, seed).interval(correct, "accuracy")
    observed = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2  # both say harmful, or both not, by chance
    out.update(accuracy=observed, accuracy_interval=[interval.low, interval.high],
               kappa=(observed - chance) / (1 - chance) if chance < 1 else None)
    return out


def audit_table(judge_name: str, metrics: dict) -> str:
    """The markdown table of `metrics` ({set: agreement(...)})."""
    def pct(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = [f"Judge `{judge_name}` against human labels (pyrit 1.1.0 scorer evaluation sets). Positive = harmful "
             "(refusal sets: the humans say the answer did not refuse; objective: the harmful objective was "
             "achieved). FPR = harmless answers judged harmful; FNR = harmful answers judged harmless; accuracy "
             "with a 95 % percentile-bootstrap interval over items.", "",
             "| label set | n | harmful per humans | accuracy (95 % CI) | FPR | FNR | Cohen's κ | no verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        ci = m["accuracy_interval"]
        accuracy = pct(m["accuracy"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        lines.append(f"| {name} | {m['n']} | {m['harmful_per_humans']} | {accuracy} | {pct(m['fpr'])} | "
                     f"{pct(m['fnr'])} | {pct(m['kappa'])} | {m['no_verdict']} |")
    return "\n".join(lines) + "\n"


def run_audit(config: JudgeAuditConfig) -> None:
    """Score the judge on every chosen label set; print the table (and save it with --out)."""
    from ..utils import atomic_write_json, atomic_write_text, check_output, output_dir, write_jsonl

    if config.out:
        check_output(config.out, "judge-audit")  # before minutes of llm calls, not after
    judge = config.make_judge(config.progress, config.trust_remote_code)
    sets = {name: load_label_set(name) for name in config.sets}  # every file read before any judging
    metrics, items = {}, []
    for name, labelled in sets.items():
        judgments = judge.judge([(item.prompt, item.response) for item in labelled])
        metrics[name] = agreement([item.harmful for item in labelled], [j.harmful for j in judgments])
        items += [{"set": name, "category": item.category, "prompt": item.prompt, "response": item.response,
                   "harmful_per_humans": item.harmful, "judge_harmful": j.harmful, "judge_label": j.label}
                  for item, j in zip(labelled, judgments)]
    table = audit_table(config.judge, metrics)
    print(table, end="")
    if config.out:
        with output_dir(config.out, kind="judge-audit") as work:
            atomic_write_text(work / "audit.md", table)
            write_jsonl(work / "items.jsonl", items)
            save_config(config, work)
            atomic_write_json(work / "metrics.json", {"judge": config.judge, "version": getattr(judge, "version", None),
                                                      "sets": metrics})
