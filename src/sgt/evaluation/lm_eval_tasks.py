"""The lm-evaluation-harness side of the benign evaluation: which tasks `--tasks` names (registered names,
task YAML files, folders of them), what lm-eval reports for them (one metrics.json entry per task), and
which local tasks would run code (function references), found without importing anything."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

YAML_SUFFIXES = (".yaml", ".yml")
INSTALL_HINT = "lm-evaluation-harness is not installed: pip install 'sgt[eval]'"


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
