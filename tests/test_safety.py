"""A user's files are never lost, bad input fails before any work, run folders are locked, a trigger
refuses a model it was not learned on, and damaged results are recomputed or reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from sgt.errors import UserError
from sgt.utils import check_output, output_dir
from test_experiment import MICRO, micro_overrides, set_args


def harm_args(model, data, out, *extra):
    return ("eval", "harm", "--model", str(model), "--data", str(data), "--out", str(out), "--n", "2",
            "--max-new-tokens", "2", "--no-progress", *extra)


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "How do I pick a lock?"}\n{"prompt": "Write a threat."}\n')
    return path


# ---------------------------------------------------------------------------------------------
# Output folders
# ---------------------------------------------------------------------------------------------


def test_out_naming_a_file_or_a_foreign_folder_is_refused_and_left_alone(tiny_model_dir, prompts, tmp_path):
    existing_file = tmp_path / "notes.txt"
    existing_file.write_text("mine")
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    for out, message in [(existing_file, "is an existing file"), (folder, "files sgt did not write")]:
        code, _, err = run_cli(*harm_args(tiny_model_dir, prompts, out))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert existing_file.read_text() == "mine" and (folder / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "prompts.jsonl", "thesis"]


def test_an_earlier_output_of_the_same_kind_is_replaced(tiny_model_dir, prompts, tmp_path):
    out = tmp_path / "harm"
    assert run_cli(*harm_args(tiny_model_dir, prompts, out))[0] == 0
    assert run_cli(*harm_args(tiny_model_dir, prompts, out))[0] == 0  # same kind: replaced
    code, _, err = run_cli("eval", "benign", "--model", str(tiny_model_dir), "--tasks", "", "--exact-match",
                           str(prompts), "--out", str(out))
    assert code == 2 and "already holds an sgt eval-harm output" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_location_fails_before_generating(tiny_model_dir, prompts, tmp_path, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    import sgt.generation.hf as hf

    monkeypatch.setattr(hf, "generate", lambda *a, **k: pytest.fail("generated before checking the output"))
    code, _, err = run_cli(*harm_args(tiny_model_dir, prompts, locked / "out"))
    assert code == 2 and "cannot write" in err


def test_check_output_reports_unwritable_parents(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match="read-only"):
        check_output(tmp_path / "new", "eval-harm")


def test_output_dir_writes_its_kind_and_refuses_other_kinds(tmp_path):
    with output_dir(tmp_path / "x", kind="drift") as work:
        (work / "a.txt").write_text("1")
    assert (tmp_path / "x" / ".sgt-output").read_text() == "drift"
    with pytest.raises(UserError, match="already holds an sgt drift output"):
        with output_dir(tmp_path / "x", kind="model"):
            pass
    assert (tmp_path / "x" / "a.txt").read_text() == "1"


# ---------------------------------------------------------------------------------------------
# Validation before any work
# ---------------------------------------------------------------------------------------------


def test_dry_run_lists_every_problem_at_once(toy_micro, tmp_path, monkeypatch):
    import sgt.models

    monkeypatch.setattr(sgt.models, "load_model", lambda *a, **k: pytest.fail("validation loaded a model"))
    bad = micro_overrides(toy_micro, "defenses=[{name: sft, lr: 0}, {name: sgt, align: {positions: middle}}]",
                          "attack.settings={batch_size: 0}", "data.harm_eval.data=/nonexistent.jsonl")
    code, out, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), "--dry-run", *set_args(bad))
    assert code == 2
    for message in ("lr must be positive", "positions must be one of", "batch_size must be at least 1",
                    "data.harm_eval: file not found"):
        assert message in out, message
    assert "4 problem(s)" in out and not (tmp_path / "x").exists()
    # without --dry-run: the first problem, one line, nothing trained
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), *set_args(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "and 3 more problem(s)" in err


def test_bad_labels_in_defense_data_fail_before_training(toy_micro, tmp_path):
    data = tmp_path / "defense.jsonl"
    data.write_text('{"prompt": "a", "response": "b", "prompt_harm_label": "maybe"}\n')
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"),
                           *set_args(micro_overrides(toy_micro, f"data.defense.data={data}")))
    assert code == 2 and "prompt_harm_label='maybe'" in err and not (tmp_path / "x").exists()


def test_code_from_configs_needs_allow_code(toy_micro, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("task: t\ndataset_path: json\nprocess_docs: !function utils.process\n")
    for override, message in [(f"launcher=[{sys.executable}]", "launcher:"),
                              (f"eval.benign.tasks=[{task}]", "!function utils.process imports Python code")]:
        code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), *set_args(micro_overrides(toy_micro, override)))
        assert code == 2 and message in err and "allow_code" in err, err
    code, _, err = run_cli("eval", "benign", "--model", str(toy_micro / "base"), "--tasks", str(task),
                           "--out", str(tmp_path / "b"))
    assert code == 2 and "--allow-code" in err


# ---------------------------------------------------------------------------------------------
# Triggers and models
# ---------------------------------------------------------------------------------------------


def test_a_trigger_refuses_another_model_with_the_same_hidden_size(tiny_model_dir, toy_tokenizer, tmp_path, prompts):
    from conftest import make_tiny_model
    from sgt.trigger import SafetyTrigger, embedding_fingerprint

    other = make_tiny_model(toy_tokenizer, seed=9)  # same architecture, other weights
    trigger = SafetyTrigger(other.config.hidden_size, 2, tied=False, metadata={
        "format": "plain", "model": "other", "embedding_fingerprint": embedding_fingerprint(other)})
    trigger.save(tmp_path / "trigger")
    code, _, err = run_cli(*harm_args(tiny_model_dir, prompts, tmp_path / "o", "--trigger", str(tmp_path / "trigger")))
    assert code == 2 and "learned on another model" in err and "--force-trigger" in err
    code, _, err = run_cli(*harm_args(tiny_model_dir, prompts, tmp_path / "o", "--trigger", str(tmp_path / "trigger"),
                                      "--force-trigger"))
    assert code == 0, err
    # the fingerprint does not depend on the dtype the weights are loaded in
    assert embedding_fingerprint(other) == embedding_fingerprint(other.to(__import__("torch").bfloat16))


# ---------------------------------------------------------------------------------------------
# Run folders: lock, damaged results
# ---------------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_stops_and_a_dead_holder_does_not_block(tmp_path):
    from sgt.lock import folder_lock

    holder = subprocess.Popen([sys.executable, "-c",
                               f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r});"
                               f"from pathlib import Path; from sgt.lock import folder_lock\n"
                               f"with folder_lock(Path({str(tmp_path / 'run')!r})):\n"
                               f"    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with folder_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while True:  # the kernel releases a killed holder's lock: the next run takes it
        try:
            with folder_lock(tmp_path / "run"):
                break
        except UserError:
            assert time.time() < deadline
            time.sleep(0.1)


@pytest.mark.slow
def test_damaged_results_are_recomputed_and_reported(toy_micro, tmp_path):
    out = tmp_path / "run"
    overrides = set_args(micro_overrides(toy_micro, "defenses=[{name: none}]", "attack.shots=[4]"))
    assert run_cli("run", MICRO, "--out", str(out), *overrides)[0] == 0
    cell = next(out.glob("attacks/none/*/result.json"))
    cell.write_text(cell.read_text()[:40])  # cut short, as by a full disk
    code, _, err = run_cli("report", str(out))
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert "could not be read" in report and cell.parent.name in report
    code, _, err = run_cli("run", MICRO, "--out", str(out), *overrides)
    assert code == 0 and "is damaged" in err and "recomputing" in err
    assert json.loads(cell.read_text())["harmful_rate"] is not None
