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

import difflib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import cfg, save_config
from ..data.formats import FORMATS, PromptFormat
from ..errors import UserError
from ..generation import generate
from ..stats import encode_flags
from ..utils import atomic_write_json, check_output, output_dir, seed_everything, write_jsonl

DEFAULT_TASKS = ["mmlu", "openbookqa"]
YAML_SUFFIXES = (".yaml", ".yml")
GROUP_COLUMNS = ("family", "category")  # exact-match breakdown: the first of these a file has
INSTALL_HINT = "lm-evaluation-harness is not installed: pip install 'sgt[eval]'"


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


# ---------------------------------------------------------------------------------------------
# Task resolution: names, YAML files and folders -> lm-eval names + include paths
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskPlan:
    """What to hand lm-eval: task names, the folders that define local ones, whether built-ins are needed."""

    names: list[str] = field(default_factory=list)
    include_paths: list[str] = field(default_factory=list)
    needs_defaults: bool = False


def is_local_task(item: str) -> bool:
    """A YAML path rather than a registered name; judged by spelling, not by what exists, so that a
    folder in the working directory never shadows a registered task of the same name."""
    return item.lower().endswith(YAML_SUFFIXES) or "/" in item or item.startswith((".", "~"))


def _lm_eval():
    """Import lm-eval lazily: it is an optional extra and slow to import."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return lm_eval, HFLM, TaskManager


def _local_index(folder: Path):
    """lm-eval's own index of one folder (its YAML parsing handles `include:` and `!function`)."""
    _, _, TaskManager = _lm_eval()
    return TaskManager(include_path=str(folder), include_defaults=False)


def _children(manager, group: str) -> set[str]:
    """The names a group YAML lists under `task:` (strings or inline task dicts)."""
    listed = (manager.task_index[group].cfg or {}).get("task", []) or []
    return {(c.get("task") or c.get("group")) if isinstance(c, dict) else c for c in listed}


def _top_level_names(manager, file: Path | None) -> list[str]:
    """The names to run from a local folder (groups and tasks no local group contains) or one file."""
    if file is not None:
        return [name for name, e in manager.task_index.items()
                if e.yaml_path and Path(e.yaml_path).resolve() == file]
    children = set().union(*(_children(manager, g) for g in manager.all_groups))
    return [n for n in manager.all_groups + manager.all_subtasks if n not in children]


def resolve_local(item: str) -> tuple[list[str], str, bool]:
    """(task names, include folder, needs built-in tasks) for a YAML file or folder; one-line errors."""
    path = Path(item).expanduser().resolve()
    if not path.exists():
        raise UserError(f"task file not found: {item} (give a task YAML, a folder of YAMLs or a registered name)")
    folder, file = (path, None) if path.is_dir() else (path.parent, path)
    if file is not None and not file.name.lower().endswith(YAML_SUFFIXES):
        raise UserError(f"{item} is not a task YAML file (.yaml/.yml)")
    manager = _local_index(folder)
    names = _top_level_names(manager, file)
    if not names:
        raise UserError(f"{item} defines no lm-eval task: a task YAML needs a `task:` key "
                        "(and dataset_path, doc_to_text, ...)")
    local = set(manager.all_tasks)
    external = any(c not in local for n in names if n in manager.all_groups for c in _children(manager, n))
    return names, str(folder), external


def plan_tasks(items: list[str]) -> TaskPlan:
    """Split the tasks option into registered names and local YAMLs (their folders become include paths)."""
    plan = TaskPlan()
    for item in items:
        if is_local_task(item):
            names, folder, external = resolve_local(item)
            plan.names += [n for n in names if n not in plan.names]
            plan.include_paths += [folder] if folder not in plan.include_paths else []
            plan.needs_defaults |= external  # a local group that lists built-in tasks
        else:
            plan.names += [item] if item not in plan.names else []
            plan.needs_defaults = True
    return plan


def task_manager(plan: TaskPlan):
    """A TaskManager for the plan; unknown names fail here, before any model is loaded.

    Built-in tasks are indexed only when needed (indexing them takes seconds).
    """
    _, _, TaskManager = _lm_eval()
    manager = TaskManager(include_path=plan.include_paths or None, include_defaults=plan.needs_defaults)
    known = set(manager.all_tasks)
    for name in plan.names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"unknown lm-eval task {name!r}{hint}: give a registered name (`lm-eval ls tasks` "
                            "lists them), a task YAML file or a folder of task YAMLs")
    return manager


def load_tasks(manager, names: list[str]) -> tuple[list, list[str]]:
    """Build the Task/Group objects (this reads the datasets): data problems become one-line errors.

    Returns the objects and the names to report: each task or group, or a tag's member tasks.
    """
    built, report = [], []
    for name in names:
        try:
            loaded = manager.load([name])
        except Exception as exc:  # missing file, offline hub, gated dataset: all the user's to fix
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"could not load lm-eval task {name!r}: {first} (check its dataset; registered "
                            "tasks download from the Hugging Face hub unless already cached)") from None
        top = loaded.get("groups", {}).get(name) or loaded["tasks"].get(name)
        members = [top] if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
        built += members
        report += [name] if top is not None else sorted(loaded["tasks"])
    return built, report


# ---------------------------------------------------------------------------------------------
# lm-eval results -> metrics.json entries
# ---------------------------------------------------------------------------------------------


def _number(value):
    """lm-eval writes "N/A" for stderrs it did not compute; JSON wants null."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def task_metrics(scores: dict) -> dict:
    """{"acc,none": x, "acc_stderr,none": y} -> {"acc": x, "acc_stderr": y} (other filters keep a suffix)."""
    out = {}
    for key, value in scores.items():
        if "," not in key:
            continue  # name, alias, sample_len
        metric, filter_name = key.split(",", 1)
        out[metric if filter_name == "none" else f"{metric}/{filter_name}"] = _number(value)
    return out


def _leaves(name: str, group_subtasks: dict) -> list[str]:
    if name not in group_subtasks:
        return [name]
    return [leaf for child in group_subtasks[name] for leaf in _leaves(child, group_subtasks)]


def _shots(name: str, leaves: list[str], shots: dict) -> int | None:
    """A group's shot count: lm-eval's, else its leaves' when they agree (it skips nested groups)."""
    if shots.get(name) is not None:
        return shots[name]
    values = {shots.get(t) for t in leaves}
    return values.pop() if len(values) == 1 else None


def summarize_lm_eval(results: dict, names: list[str]) -> dict:
    """One entry per reported task or group; a group also lists its leaf tasks."""
    groups = results.get("group_subtasks", {})
    counts = {k: v["effective"] for k, v in results.get("n-samples", {}).items()}
    shots = results.get("n-shot", {})
    entries = {}
    for name in names:
        leaves = _leaves(name, groups)
        entry = {**task_metrics(results["results"].get(name, {})), "n": sum(counts.get(t, 0) for t in leaves),
                 "num_fewshot": _shots(name, leaves, shots)}
        if name in groups:
            entry["subtasks"] = {t: {**task_metrics(results["results"].get(t, {})), "n": counts.get(t, 0)}
                                 for t in leaves}
        entries[name] = entry
    return entries


def sample_rows(results: dict) -> list[dict]:
    """Per-document records (task, doc_id, target, log-likelihoods or outputs, scores) for later analysis."""
    rows = []
    for task, samples in sorted(results.get("samples", {}).items()):
        for s in samples:
            row = {"task": task, "doc_id": s.get("doc_id"), "target": s.get("target"),
                   "responses": s.get("filtered_resps")}
            row.update({m: s.get(m) for m in s.get("metrics", [])})
            rows.append(json.loads(json.dumps(row, default=str)))
    return rows


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


def tasks_with_code(tasks: list[str]) -> list[str]:
    """The function references (`!function`, or any other YAML tag that would construct an object) of the
    local tasks lm-eval would build for `tasks`, as "FILE: KEY !TAG VALUE"; nothing is imported.

    lm-eval's own index (its YAML parsing with functions unresolved, which imports nothing) says which
    task files a name stands for, groups and tags expanded; each file is then read the way lm-eval's
    loader reads it - as bytes (a UTF-8 or UTF-16 byte order mark decides the encoding), tags decoded
    (`!%66unction` is `!function`), `include:` files followed - with every tag recorded, not called.
    Registered tasks that lm-eval ships are its own code and need no consent.
    """
    items = [t for t in tasks if is_local_task(t) and Path(t).expanduser().exists()]  # missing: reported elsewhere
    if not items:
        return []
    folders, names = set(), []
    for item in items:
        found, folder, _ = resolve_local(item)
        folders.add(folder)
        names += found
    names += [t for t in tasks if not is_local_task(t)]  # a local task may shadow a registered name
    index = _local_index_of(sorted(folders))
    references, files, seen = [], set(), set()
    while names:
        name = names.pop()
        entry = index.get(name)
        if entry is None or name in seen:
            continue  # a registered task of lm-eval's own, or done
        seen.add(name)
        if entry.yaml_path is not None:
            files.add(Path(entry.yaml_path))
        if entry.kind.name == "TAG":
            names += sorted(entry.tags)  # its tasks
        names += [m for m in _children_of(entry.cfg) if m]  # a group: its members
    for file in sorted(files):
        references += _function_references(file)
    return references


def _local_index_of(folders: list[str]) -> dict:
    """lm-eval's index of the local task folders only: {name: Entry(yaml_path, cfg, tags)}."""
    _, _, TaskManager = _lm_eval()
    return TaskManager(include_path=folders, include_defaults=False).task_index


def _children_of(cfg: dict | None) -> list[str]:
    listed = (cfg or {}).get("task") if (cfg or {}).get("group") else None
    return [(c.get("task") or c.get("group")) if isinstance(c, dict) else c for c in listed or []
            if isinstance(c, (str, dict))]


def _function_references(file: Path, seen: set | None = None) -> list[str]:
    """Every tagged value of `file` and of the files it includes (lm-eval's `include:` rules: relative to
    the including file, followed recursively), as "FILE: !TAG VALUE"."""
    import yaml

    seen = seen if seen is not None else set()
    file = file.expanduser().resolve()
    if file in seen:
        return []
    seen.add(file)
    found: list[str] = []
    base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader

    class Recorder(base):  # noqa: D401 - a loader that records tags instead of calling them
        pass

    def record(loader, suffix, node):
        value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else "..."
        found.append(f"{file}: {node.tag} {value}")
        return value

    Recorder.add_multi_constructor("", record)  # every tag the safe loader does not know
    try:
        with open(file, "rb") as handle:
            config = yaml.load(handle, Loader=Recorder)  # noqa: S506 - Recorder constructs nothing
    except (OSError, yaml.YAMLError):
        return found  # unreadable: lm-eval fails on it too, before importing anything past this point
    includes = config.get("include") if isinstance(config, dict) else None
    for include in includes if isinstance(includes, list) else [includes] if includes else []:
        path = Path(str(include))
        found += _function_references(path if path.is_absolute() else file.parent / path, seen)
    return found


def check_tasks(tasks: list[str]) -> None:
    """Resolve and load the lm-eval tasks (their datasets included) without a model: a bad task name,
    YAML or offline dataset fails here, before any training."""
    plan = plan_tasks(tasks)
    if plan.names:
        load_tasks(task_manager(plan), plan.names)


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
