"""The run folder as a store of results: every defended model and every evaluation is kept on disk with the
fingerprint of what it depends on (see plan.ResultKeys), so that a re-run skips what is done, an
interrupted run loses at most the step in progress, and another run's identical work can be reused.

    defenses/<name>/defense.json                 the defended model: fingerprint, done, where the model is
    defenses/<name>/answers.json, result.json    the evaluation before attack: answers, then their judgment
    attacks/<name>/<cell>/answers.json, result.json   the same after one attack cell
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..utils import atomic_write_json, human_seconds, print_line, read_json
from .plan import ResultKeys, fingerprint


class ResultStore:
    def __init__(self, out: Path, keys: ResultKeys):
        self.out, self.keys = Path(out), keys
        self.clock = None  # a RunClock, ticked after every trained defense and finished evaluation

    def _tick(self) -> None:
        if self.clock:
            self.clock.tick()

    def defended_model(self, defense, folder: Path) -> str:
        """Apply `defense` once: reuse a finished one, resume an interrupted one, redo a stale one."""
        marker = folder / "defense.json"
        key = fingerprint(defense.fingerprint())
        state = read_marker(marker)
        if state.get("fingerprint") == key and state.get("done"):
            return model_path(state, folder)
        if folder.exists() and state.get("fingerprint") != key:
            shutil.rmtree(folder)  # made by another config: start this defense over
        folder.mkdir(parents=True, exist_ok=True)
        resuming = state.get("fingerprint") == key
        print_line(f"[defense {defense.name}] {'resuming' if resuming else 'applying'} ({defense.kind})")
        atomic_write_json(marker, {"fingerprint": key, "defense": defense.fingerprint(), "done": False})
        t = time.time()
        model_dir = defense.apply(folder)
        atomic_write_json(marker, {"fingerprint": key, "defense": defense.fingerprint(), "done": True,
                                   **model_entry(model_dir, folder), "seconds": round(time.time() - t, 1)})
        self._tick()  # an invocation stopped before any evaluation still counts its training
        return model_dir

    def evaluate(self, folder: Path, key: dict, label: str, answer, evaluator, extra: dict | None = None) -> dict:
        """One evaluation, in two steps that are each kept on disk: the model's answers (answers.json:
        training and generation, the expensive part) and their judgment (result.json), each with its own
        fingerprint (see ResultKeys.digests): another judge, or a new version of it, judges the kept answers
        again. A result with failed judge calls is not done: the next run judges its kept answers again."""
        answer_digests, digest = self.keys.digests(key)
        previous = read_marker(folder / "result.json")
        if previous.get("fingerprint") == digest and not (previous.get("harm") or {}).get("failed"):
            print_line(f"{label}: done earlier - {summary_text(previous)}")
            return previous
        t = time.time()
        answered = read_marker(folder / "answers.json")
        if answered.get("fingerprint") not in answer_digests:
            answered = {**answer(), "fingerprint": answer_digests[0], "seconds": 0.0}
            answered["seconds"] = round(time.time() - t, 1)
            atomic_write_json(folder / "answers.json", answered)
        elif answered["fingerprint"] != answer_digests[0]:  # saved by an older sgt: keep them under their own key
            atomic_write_json(folder / "answers.json", {**answered, "fingerprint": answer_digests[0]})
        t = time.time()  # judging starts: the answers' own time is in answered["seconds"] (new or kept)
        if answered.get("failed"):  # nothing to judge: the result says why (and counts as no rate at all)
            judged = {k: answered[k] for k in ("failed", "reason")} | {"harmful_rate": None, "benign_score": None}
        else:
            judged = evaluator.judge(answered)
        result = {**(extra or {}), **judged, "fingerprint": digest}
        result["seconds"] = round(answered["seconds"] + time.time() - t, 1)
        atomic_write_json(folder / "result.json", result)
        self._tick()
        failed = (result.get("harm") or {}).get("failed")
        print_line(f"{label}: {summary_text(result)} ({human_seconds(result['seconds'])})"
                   + (f" - {failed} judge call(s) failed" if failed else ""))
        return result

    def reuse(self, other: Path, defenses: list, cells: list) -> tuple[int, int]:
        """Copy from the run folder `other` every defended model and result this run would produce
        identically (same fingerprints), e.g. the shared defenses of two studies; returns how many
        defended models and results. Files are hard-linked where the file system allows, so a reused
        model costs no disk."""
        other, models, results = Path(other), 0, 0
        for defense in defenses:
            target = self.out / "defenses" / defense.name
            # A copy NAME@seedK may be the other run's single-seed NAME (same settings, same seed)
            names = dict.fromkeys([defense.name, defense.name.split("@")[0]])
            found = [(name, read_marker(other / "defenses" / name / "defense.json")) for name in names]
            found = [(name, state) for name, state in found
                     if state.get("fingerprint") == fingerprint(defense.fingerprint()) and state.get("done")]
            if not found:
                continue
            name, state = found[0]
            source = other / "defenses" / name
            if read_marker(target / "defense.json").get("fingerprint") != state["fingerprint"]:
                copy_folder(source, target, skip=("answers.json", "result.json"))  # results: below
                atomic_write_json(target / "defense.json", {**state, **model_entry(model_path(state, source), source)})
                models += 1
            trigger = defense.trigger_path(target)  # a trigger shared by the run's SGT variants lives apart
            if trigger is not None and trigger.is_relative_to(self.out) and not trigger.is_dir():
                shared = other / trigger.relative_to(self.out)
                if shared.is_dir():
                    copy_folder(shared, trigger)
            pairs = [(source, target, self.keys.release(defense))]
            pairs += [(other / "attacks" / name / c.id, self.out / "attacks" / defense.name / c.id,
                       self.keys.cell(defense, c)) for c in cells]
            results += sum(self._reuse_result(source, target, key) for source, target, key in pairs)
        return models, results

    def _reuse_result(self, source: Path, target: Path, key: dict) -> bool:
        """Judged results with their answers; else answers alone (judged by this run); whether any was copied."""
        answered, judged = self.keys.digests(key)
        names = []
        if (read_marker(source / "result.json").get("fingerprint") == judged
                and read_marker(target / "result.json").get("fingerprint") != judged):
            names = ["answers.json", "result.json"]
        elif (read_marker(source / "answers.json").get("fingerprint") in answered
              and read_marker(target / "answers.json").get("fingerprint") not in answered):
            names = ["answers.json"]
        for name in names:
            if (source / name).is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, target / name)
        return bool(names)


def read_marker(path: Path) -> dict:
    """A JSON state file, or {} when missing or damaged (then the work is simply redone)."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        print_line(f"warning: {path} is damaged (not a complete JSON object); recomputing it")
        return {}
    return data


def summary_text(result: dict) -> str:
    """One evaluation's result in a few words, for the run's log."""
    if result.get("failed"):
        return f"failed ({result.get('reason') or result['failed']})"
    harmful = result.get("harmful_rate")
    benign = result.get("benign_score")
    text = f"harmful {harmful:.2f}" if harmful is not None else "harmful n/a"
    if benign is not None:
        text += f", benign {benign:.2f}"
    return text


def copy_folder(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """`source` as `target` (replaced) without the files named in `skip`, hard-linking where possible."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=link_or_copy, ignore=shutil.ignore_patterns(*skip))


def model_entry(model_dir: str, folder: Path) -> dict:
    """defense.json's record of the defended model: relative to the defense folder when it lies inside
    it, so that the run folder can be moved, copied, or resumed from another working directory."""
    path = Path(model_dir)
    if path.exists() and path.resolve().is_relative_to(folder.resolve()):
        return {"model": path.resolve().relative_to(folder.resolve()).as_posix(), "model_in_folder": True}
    return {"model": model_dir}  # e.g. the base model itself (defense `none`): a hub name or path


def model_path(state: dict, folder: Path) -> str:
    return str(folder / state["model"]) if state.get("model_in_folder") else state["model"]
