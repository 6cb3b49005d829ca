"""Benign capability (seed script 4.3): lm-evaluation-harness tasks and exact-match files.

    sgt eval benign --model M --out DIR                       # MMLU + OpenBookQA, 5-shot, batch 8
    sgt eval benign --model toy/base --tasks toy/tasks/toy_mc.yaml --exact-match toy/data/benign_eval.jsonl

`--tasks` items are registered lm-eval names (mmlu, openbookqa, ...), task YAML files, or folders of
task YAMLs (local YAMLs need no network). lm-eval runs without a chat template, as the reference did.

Writes `metrics.json` with one entry per task:
    {"model": ..., "seconds": ...,
     "tasks": {"toy_mc": {"acc": 0.61, "acc_stderr": 0.08, "n": 32, "num_fewshot": 5},
               "mmlu": {"acc": ..., "n": ..., "num_fewshot": 5, "subtasks": {"mmlu_anatomy": {...}, ...}},
               "exact_match": {"accuracy": 0.8, "n": 50, "items": "1101...", "by_family": {"compare": {...}}}}}
plus `lm_eval_samples.jsonl` (per-document log-likelihoods and scores), `generations.jsonl` (the
exact-match rows) and `config.yaml`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..config import cfg, save_config
from ..data.formats import FORMATS, PromptFormat
from ..errors import UserError
from ..generation import generate
from ..stats import encode_flags
from ..utils import atomic_write_json, check_output, output_dir, seed_everything, write_jsonl
from .lm_eval_tasks import (  # noqa: F401 - plan_tasks, task_manager, tasks_with_code: part of this module's API
    _lm_eval,
    check_tasks,
    load_tasks,
    plan_tasks,
    sample_rows,
    summarize_lm_eval,
    task_manager,
    tasks_with_code,
)

DEFAULT_TASKS = ["mmlu", "openbookqa"]
GROUP_COLUMNS = ("family", "category")  # exact-match breakdown: the first of these a file has


MATCH_MODES = ("exact", "contains")


def normalize_answer(text: str) -> str:
    """Exact match ignores surrounding white space and case, nothing else."""
    return " ".join(text.strip().split()).lower()


def answer_matches(response: str, answers: list[str], mode: str = "exact") -> bool:
    """`exact`: the whole response is one of the answers. `contains`: one of the answers appears in the
    response as whole words (for real models, which answer in sentences: "The capital is Paris.")."""
    said = normalize_answer(response)
    wanted = [normalize_answer(a) for a in answers if a and a.strip()]
    if mode == "exact":
        return said in wanted
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", said) for a in wanted)


def exact_match(model, tokenizer, prompts: list[str], answers: list[str], fmt: PromptFormat,
                batch_size: int = 64, max_new_tokens: int = 48, trigger=None, progress: bool = False,
                aliases: list[list[str]] | None = None, modes: list[str] | None = None) -> dict:
    """Greedy answers compared with the references (plus per-row `aliases`, per-row match `modes`)."""
    responses = generate(model, tokenizer, prompts, fmt, trigger=trigger, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, progress=progress, desc="benign")
    aliases = aliases or [[] for _ in prompts]
    modes = modes or ["exact"] * len(prompts)
    correct = [answer_matches(r, [a, *more], mode) for r, a, more, mode in zip(responses, answers, aliases, modes)]
    rows = [{"prompt": p, "answer": a, "response": r, "correct": c}
            for p, a, r, c in zip(prompts, answers, responses, correct)]
    return {"accuracy": sum(correct) / max(1, len(correct)), "n": len(correct), "rows": rows}


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass
class BenignEvalSettings:
    """What to measure (shared by `sgt eval benign` and the experiment's `eval.benign`)."""

    tasks: list[str] = cfg([], "lm-evaluation-harness tasks, comma separated: registered names (mmlu, "
                               "openbookqa, ...), task YAML files or folders of task YAMLs (local YAMLs run "
                               "offline). Empty: exact match only.")
    num_fewshot: int = cfg(5, "Few-shot examples per lm-eval prompt (tasks that fix 0 in their YAML keep 0).")
    batch_size: int = cfg(8, "Batch size for lm-eval and for exact-match generation.")
    limit: int | None = cfg(None, "At most this many examples per task (quick runs; None: all).")
    exact_match: str | None = cfg(None, "Optional prompt/answer file (.jsonl/.json/.csv) scored by greedy exact match; "
                                        "a family or category column gives a per-group breakdown; optional per-row "
                                        "`aliases` (other accepted answers) and `match` (exact, or contains: the "
                                        "answer appears as whole words in the response).")
    apply_chat_template: bool = cfg(False, "lm-eval: wrap prompts in the tokenizer's chat template "
                                           "(off: as the reference, for base models).")
    max_new_tokens: int = cfg(48, "Exact match: maximum tokens generated per prompt (greedy).")
    allow_code: bool = cfg(False, "Allow local task YAMLs that import Python (!function); off: they are refused.")

    def __post_init__(self):
        self.tasks = [t.strip() for t in (self.tasks or []) if t and t.strip()]
        if self.num_fewshot < 0:
            raise UserError(f"num_fewshot must be 0 or more, got {self.num_fewshot}")
        if self.batch_size <= 0 or self.max_new_tokens <= 0:
            raise UserError("batch_size and max_new_tokens must be positive")
        if self.limit is not None and self.limit <= 0:
            raise UserError(f"limit must be a positive number of examples per task, got {self.limit}")

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.exact_match)


@dataclass
class BenignEvalConfig(BenignEvalSettings):
    tasks: list[str] = cfg(list(DEFAULT_TASKS), "lm-evaluation-harness tasks, comma separated: registered names "
                                                "(mmlu, openbookqa, ...), task YAML files or folders of task YAMLs "
                                                "(local YAMLs run offline). Empty: exact match only.")
    model: str = cfg("", "Model to evaluate: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: metrics.json, lm_eval_samples.jsonl, generations.jsonl, config.yaml.")
    format: str = cfg("plain", "Exact-match prompt format: plain or chat.")
    dtype: str = cfg("auto", "Weights dtype: auto, bfloat16, float16 or float32.")
    seed: int = cfg(42, "Seed for exact-match generation (lm-eval keeps its own default seeds, as the reference).")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")
    progress: bool = cfg(True, "Show progress bars.")

    def __post_init__(self):
        super().__post_init__()
        if not self.enabled:
            raise UserError("nothing to evaluate: pass --tasks NAMES_OR_YAMLS and/or --exact-match FILE")
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")


def run_lm_eval(config: BenignEvalConfig, model, tokenizer, manager, tasks: list) -> dict:
    """simple_evaluate on the already loaded model (HFLM wraps the object; nothing is loaded twice)."""
    lm_eval, HFLM, _ = _lm_eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=config.num_fewshot, limit=config.limit,
                                   task_manager=manager, apply_chat_template=config.apply_chat_template,
                                   log_samples=True)


# ---------------------------------------------------------------------------------------------
# Exact match on a prompt/answer file
# ---------------------------------------------------------------------------------------------


def load_exact_match(path: str, limit: int | None) -> tuple[list, list[dict], str | None]:
    """(examples with answers, raw rows, breakdown column) from a prompt/answer file."""
    from ..data.sources import load_examples, read_local_rows

    examples = load_examples(path, schema="generic")  # generic: `answer` (or response/target) is the reference
    rows = read_local_rows(path)
    missing = [i for i, e in enumerate(examples, start=1) if e.response is None]
    if missing:
        raise UserError(f"{path}: row {missing[0]} has no answer; exact match needs an answer "
                        "(or response/target) column in every row")
    column = next((c for c in GROUP_COLUMNS if c in rows[0]), None)
    for number, row in enumerate(rows, start=1):
        if row.get("match", "exact") not in MATCH_MODES:
            raise UserError(f"{path}: row {number} has match={row.get('match')!r}; use one of {', '.join(MATCH_MODES)}")
        if not isinstance(row.get("aliases", []), list):
            raise UserError(f"{path}: row {number} has a non-list `aliases`; give a list of accepted answers")
    if limit is not None:
        examples, rows = examples[:limit], rows[:limit]
    return examples, rows, column


def score_exact_match(config: BenignEvalConfig, model, tokenizer, examples, rows, column) -> tuple[dict, list]:
    """Accuracy overall and per group; returns (metrics entry, generation rows)."""
    fmt = PromptFormat(tokenizer, config.format)
    result = exact_match(model, tokenizer, [e.prompt for e in examples], [e.response for e in examples], fmt,
                         batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                         progress=config.progress, aliases=[r.get("aliases", []) for r in rows],
                         modes=[r.get("match", "exact") for r in rows])
    # per-item correctness ('1'/'0' per row), for bootstrap intervals over items in the experiment report
    entry = {"accuracy": result["accuracy"], "n": result["n"],
             "items": encode_flags(row["correct"] for row in result["rows"])}
    generations = result["rows"]
    if column:
        groups: dict[str, list[bool]] = {}
        for gen, row in zip(generations, rows):
            gen[column] = row.get(column)
            groups.setdefault(str(row.get(column)), []).append(gen["correct"])
        entry[f"by_{column}"] = {g: {"accuracy": sum(v) / len(v), "n": len(v)} for g, v in sorted(groups.items())}
    return entry, generations


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _load_model(config: BenignEvalConfig, model, tokenizer):
    from ..models import default_device, load_model, load_tokenizer

    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code, device=default_device())
    return model.eval(), tokenizer


def evaluate_benign(config: BenignEvalConfig, model=None, tokenizer=None, write: bool = True) -> dict:
    """Run the lm-eval tasks and the exact-match file; returns (and if `write`, saves) the metrics.

    Every input is checked (task names, YAMLs, datasets, the exact-match file) before the model loads.
    """
    from ..models import model_name

    if write and not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if model is None and not config.model:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    if write:
        check_output(config.out, "eval-benign")  # before the evaluation, not after
    start = time.time()
    seed_everything(config.seed)
    risky = [] if config.allow_code else tasks_with_code(config.tasks)
    if risky:
        raise UserError(f"{risky[0]} imports Python code (a function reference); pass --allow-code if you trust it")
    plan = plan_tasks(config.tasks)
    manager = task_manager(plan) if plan.names else None
    tasks, report = load_tasks(manager, plan.names) if plan.names else ([], [])
    em_data = load_exact_match(config.exact_match, config.limit) if config.exact_match else None
    model, tokenizer = _load_model(config, model, tokenizer)
    entries, samples, generations = {}, [], []
    if tasks:
        results = run_lm_eval(config, model, tokenizer, manager, tasks)
        entries.update(summarize_lm_eval(results, report))
        samples = sample_rows(results)
    if em_data:
        entries["exact_match"], generations = score_exact_match(config, model, tokenizer, *em_data)
    metrics = {"model": config.model or model_name(model), "tasks": entries,
               "seconds": round(time.time() - start, 1)}
    if write:
        _write_outputs(config, metrics, samples, generations)
    return metrics


def _write_outputs(config: BenignEvalConfig, metrics: dict, samples: list, generations: list) -> None:
    with output_dir(config.out, kind="eval-benign") as work:
        if samples:
            write_jsonl(work / "lm_eval_samples.jsonl", samples)
        if generations:
            write_jsonl(work / "generations.jsonl", generations)
        save_config(config, work)
        atomic_write_json(work / "metrics.json", metrics)
