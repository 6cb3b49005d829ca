"""`sgt run` end to end on the micro toy world: report files, resume, interruption, dry run, errors."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from sgt.experiment import Experiment, load_experiment, run_experiment
from sgt.report import analyse, budget_to_break

MICRO = str(ROOT / "configs" / "micro.yaml")


def micro_overrides(toy: Path, *extra: str) -> list[str]:
    """The micro config, smaller: 2 attack cells, short stages, the test session's toy world."""
    return [f"world.out={toy}", "attack.shots=[4,16]", "attack.lr=[1.0e-3]", "attack.epochs=[2]",
            "defenses=[{name: none}, {name: sft, epochs: 2, max_length: 96}, "
            "{name: sgt, trigger: {length: 2, tied: false, lr: 0.03, epochs: 1, batch_size: 16, max_length: 96}, "
            "align: {rows: 128, lr: 5.0e-4, epochs: 1, batch_size: 8, grad_accum: 1, max_length: 96}}]",
            "eval.harm.n=24", "eval.harm.max_new_tokens=16", *extra]


def set_args(overrides: list[str]) -> list[str]:
    args = []
    for item in overrides:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def finished_run(toy_micro, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "micro"
    code, out_text, err = run_cli("run", MICRO, "--out", str(out), *set_args(with_drift(toy_micro)))
    assert code == 0, err
    return out, json.loads(out_text), err


def with_drift(toy: Path, *extra: str) -> list[str]:
    return micro_overrides(toy, "eval.drift.trigger=sgt", "eval.drift.n=8", *extra)


@pytest.mark.slow
def test_run_writes_the_report(finished_run):
    out, summary, log = finished_run
    for name in ("config.yaml", "results.json", "report.md", "harm_vs_budget.png", "benign.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["defenses"]) == {"none", "sft", "sgt"}
    for entry in results["defenses"].values():
        assert entry["defended"]["harmful_rate"] is not None
        assert 0 <= entry["defended"]["benign_score"] <= 1
        assert [row["shots"] for row in entry["attacked"]] == [4, 16]
        assert entry["budget_to_break"] is not None
    assert results["defenses"]["none"]["defended"]["harmful_rate"] >= 0.9  # the base complies
    report = (out / "report.md").read_text()
    assert "budget to break" in report and "| sgt |" in report and "harm_vs_budget.png" in report
    assert summary["defenses"]["none"]["budget_to_break"] == results["defenses"]["none"]["budget_to_break"]
    assert "[9/9]" in log
    # attacked weights are deleted after evaluation; defended ones are kept
    assert not list(out.glob("attacks/*/*/model"))
    assert (out / "defenses" / "sgt" / "model" / "model.safetensors").is_file()
    (trigger,) = list((out / "triggers").iterdir())   # stage 1 is kept apart, shareable by SGT variants
    assert (trigger / "trigger.safetensors").is_file()


@pytest.mark.slow
def test_drift_to_the_trigger_region_is_measured_for_every_model(finished_run):
    out, _, _ = finished_run
    results = json.loads((out / "results.json").read_text())["defenses"]
    outside = json.loads((out / "drift_reference.json").read_text())["base_without_trigger"]
    assert len(outside) == 2 and all(v > 0 for v in outside)  # the micro base has 2 layers
    for entry in results.values():
        assert len(entry["defended"]["drift"]) == 2
        assert all(len(row["drift"]) == 2 for row in entry["attacked"])
    # the undefended base is the "outside" level by definition; trained models moved
    assert results["none"]["defended"]["drift"] == pytest.approx(outside, rel=1e-4)
    assert results["sgt"]["defended"]["drift"] != pytest.approx(outside, rel=1e-3)
    report = (out / "report.md").read_text()
    assert "## Representation drift" in report and (out / "drift.png").is_file()


@pytest.mark.slow
def test_every_trigger_is_checked_and_reported(finished_run):
    """The frozen base's refusal without -> with the sgt defense's trigger, on the evaluation and benign
    prompts, and stage 1's curves: in results.json, report.md and trigger.png (defenses without a
    trigger have none)."""
    out, _, _ = finished_run
    results = json.loads((out / "results.json").read_text())["defenses"]
    check = results["sgt"]["defended"]["trigger_check"]
    assert set(check["sets"]) == {"evaluation", "benign"} and check["sets"]["evaluation"]["n"] == 24
    evaluation = check["sets"]["evaluation"]
    assert evaluation["with"] > evaluation["without"]   # the micro trigger makes the base refuse
    assert evaluation["without"] == pytest.approx(1 - results["none"]["defended"]["harmful_rate"], abs=1e-6)
    assert check["training"]["steps"] > 0 and check["training"]["component_history"]
    assert "trigger_check" not in results["sft"]["defended"]
    report = (out / "report.md").read_text()
    assert "## The trigger (stage 1)" in report and f"{evaluation['without']:.2f} -> **{evaluation['with']:.2f}** (n 24)" in report
    assert (out / "trigger.png").is_file()


@pytest.mark.slow
def test_rerun_skips_finished_cells(finished_run, toy_micro):
    out, _, _ = finished_run
    stamps = {p: p.stat().st_mtime for p in out.glob("**/result.json")}
    # a run folder written before a config field existed is the same config (the field at its default)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["attack"]["skip_broken"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args(with_drift(toy_micro)))
    assert code == 0, err
    assert err.count("done earlier") == 9
    assert stamps == {p: p.stat().st_mtime for p in out.glob("**/result.json")}


@pytest.mark.slow
def test_a_new_study_reuses_the_identical_defenses_and_cells_of_another_run(finished_run, toy_micro, tmp_path):
    out, _, _ = finished_run
    stamps = {p: p.stat().st_mtime for p in out.glob("**/result.json")}
    study = tmp_path / "study"  # same defenses and evaluation, a smaller grid: nothing left to compute
    code, _, err = run_cli("run", MICRO, "--out", str(study), "--reuse", str(out),
                           *set_args(with_drift(toy_micro, "attack.shots=[4]")))
    assert code == 0, err
    assert "reused 3 defended model(s) and 6 result(s)" in err  # 3 evaluations before attack, 3 cells
    assert err.count("done earlier") == 6 and "applying" not in err
    weights = study / "defenses" / "sft" / "model" / "model.safetensors"
    assert weights.stat().st_ino == (out / "defenses" / "sft" / "model" / "model.safetensors").stat().st_ino  # linked
    assert json.loads((study / "defenses" / "sft" / "defense.json").read_text())["model_in_folder"] is True
    assert stamps == {p: p.stat().st_mtime for p in out.glob("**/result.json")}  # the source is untouched
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "nothing"),
                           *set_args(with_drift(toy_micro)))
    assert code == 2 and "not an sgt run folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_seeded_study_reuses_the_single_seed_run_for_its_matching_seed(finished_run, toy_micro, tmp_path):
    """defense_seeds [0, 7]: the copies NAME@seed0 are the finished run's NAME (same settings, seed 0), with
    their release results and attack cells; the seed-7 copies are not, except `none`, which no seed changes."""
    from sgt.experiment import Experiment

    out, _, _ = finished_run
    config = load_experiment(MICRO, with_drift(toy_micro, "defense_seeds=[0, 7]"))
    experiment = Experiment(config, tmp_path / "study")
    models, results = experiment.store.reuse(out, experiment.defenses, experiment.cells)
    assert (models, results) == (4, 12)  # none@0, none@7, sft@0, sgt@0: 4 releases + 4 x 2 cells
    assert (tmp_path / "study" / "defenses" / "sft@seed0" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "study" / "attacks" / "sgt@seed0").is_dir()
    assert not (tmp_path / "study" / "defenses" / "sft@seed7").exists()


@pytest.mark.slow
def test_interrupted_run_resumes_losing_only_the_cell_in_progress(toy_micro, tmp_path, monkeypatch):
    import sgt.experiment.runner as runner

    out = tmp_path / "interrupted"
    config = load_experiment(MICRO, micro_overrides(toy_micro, "defenses=[{name: none}]"))
    real = runner.attack_and_answer
    calls = []

    def crash_on_second(experiment, model_dir, cell, cell_dir, evaluator):
        calls.append(cell.shots)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(experiment, model_dir, cell, cell_dir, evaluator)

    monkeypatch.setattr(runner, "attack_and_answer", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, out)
    done = sorted(p.parent.name for p in out.glob("attacks/*/*/result.json"))
    assert len(done) == 1
    first = next(out.glob("attacks/*/*/result.json")).stat().st_mtime
    monkeypatch.setattr(runner, "attack_and_answer", real)
    run_experiment(config, out)
    assert len(list(out.glob("attacks/*/*/result.json"))) == 2
    assert next(p for p in out.glob("attacks/*/*/result.json") if p.parent.name == done[0]).stat().st_mtime == first


@pytest.mark.slow
def test_a_run_killed_inside_a_trained_defense_continues_from_its_checkpoint(toy_micro, tmp_path, monkeypatch):
    """Baselines train for an hour or more on a real model: a killed `sgt run` must not start them over."""
    import sgt.launch
    import sgt.methods.defend as defend

    config = load_experiment(MICRO, micro_overrides(
        toy_micro, "defenses=[{name: booster, rows: 16, batch_size: 4, max_length: 96, epochs: 1, save_steps: 2}]",
        "attack.shots=[4]", "attack.skip_broken=true"))
    real, steps = defend.check_finite, []

    def record(loss, step, stop_at=None):
        steps.append(step)
        if step == stop_at:
            raise KeyboardInterrupt
        return real(loss, step)

    monkeypatch.setattr(defend, "check_finite", lambda loss, step: record(loss, step, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "run")
    assert steps == [1, 2, 3]
    steps.clear()
    monkeypatch.setattr(defend, "check_finite", record)
    run_experiment(config, tmp_path / "run")
    assert steps == [3, 4]  # continued after checkpoint-2, not from step 1
    metrics = json.loads((tmp_path / "run" / "defenses" / "booster" / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 4

    # Under a launcher the same decision travels to `sgt defend` in the stage's settings.
    from sgt.context import RunContext
    from sgt.data.sources import DataFields
    from sgt.defenses import make_defense

    partial = tmp_path / "again" / "model.partial" / "checkpoints" / "checkpoint-2"
    partial.mkdir(parents=True)
    sent = {}
    monkeypatch.setattr(sgt.launch, "run_stage", lambda command, stage, *a: sent.update(stage.settings))
    context = RunContext(model="m", defense_data=DataFields(data="d"), format="plain", dtype="float32", seed=0,
                         trust_remote_code=False, progress=False, launcher=["accelerate", "launch"])
    make_defense({"name": "booster", "save_steps": 2}, context).apply(tmp_path / "again")
    assert sent["resume"] is True


def test_each_defense_is_trained_just_before_its_own_rows(toy_micro, tmp_path, monkeypatch):
    """A run stopped during the first defense's attacks has not trained the later defenses: an
    interrupted run leaves whole rows (defense, evaluation, attacks), not many models and no numbers."""
    import sgt.experiment.runner as runner

    config = load_experiment(MICRO, micro_overrides(toy_micro, "defenses=[{name: none}, {name: sft, epochs: 1}]"))

    def interrupt(experiment, model_dir, cell, cell_dir, evaluator):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "attack_and_answer", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "run")
    assert (tmp_path / "run" / "defenses" / "none" / "result.json").is_file()
    assert not (tmp_path / "run" / "defenses" / "sft").exists()


def test_skip_broken_does_not_attack_a_defense_harmful_before_attack(toy_micro, tmp_path, monkeypatch):
    import sgt.experiment.runner as runner

    monkeypatch.setattr(runner, "attack_and_answer",
                        lambda *a: pytest.fail("attacked a defense that was harmful before any attack"))
    config = load_experiment(MICRO, micro_overrides(toy_micro, "defenses=[{name: none}]", "attack.skip_broken=true"))
    summary = run_experiment(config, tmp_path / "run")
    assert summary["defenses"]["none"]["harmful_rate"] >= 0.9  # the toy base complies
    assert summary["defenses"]["none"]["budget_to_break"] == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| none | 1.00 [1.00, 1.00] | 0.60 [0.46, 0.74] | yes | 0 (harmful before attack) | 0 (harmful before attack) |" \
        in report  # 95 % intervals over the 24 prompts and 50 benign items
    assert not (tmp_path / "run" / "attacks").exists()


def test_dry_run_loads_no_weights(toy_micro, tmp_path, monkeypatch):
    import sgt.models

    monkeypatch.setattr(sgt.models, "load_model", lambda *a, **k: pytest.fail("dry run loaded a model"))
    code, out, _ = run_cli("run", MICRO, "--out", str(tmp_path / "d"), "--dry-run", *set_args(micro_overrides(toy_micro)))
    assert code == 0
    assert "attack grid: 2 cells per defense" in out and "judge=keyword" in out and "sgt: trigger" in out
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_changed_config_is_refused_unless_forced(finished_run, toy_micro):
    out, _, _ = finished_run
    before = (out / "results.json").read_text()
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args(with_drift(toy_micro, "eval.harm.n=20")))
    assert code == 2 and "different config" in err and len(err.strip().splitlines()) == 1
    assert (out / "results.json").read_text() == before


@pytest.mark.parametrize("override, message", [
    ("defenses=[{name: magic}]", "unknown defense 'magic'"),
    ("eval.harm.judge=oracle", "unknown judge 'oracle'"),
    ("eval.harm.judge_options={colour: red}", "unknown judge_options (keyword) field(s): colour"),
    ("attack.settings={learning_rat: 1}", "unknown attack.settings field(s): learning_rat"),
    ("defenses=[{name: sft, lr: -1}]", "lr must be positive"),
    ("attack.shots=[]", "no cells"),
    ("attack.lr=[0]", "attack.lr must be positive"),
    ("eval.drift.trigger=sft", "defense 'sft' (sft) has no trigger"),
    ("eval.drift.trigger=nowhere", "neither a defense of this run nor a trigger folder"),
    ("data.attack.data=/nonexistent/attack.jsonl", "not found"),
])
def test_bad_experiment_configs(toy_micro, tmp_path, override, message):
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "bad"), *set_args(micro_overrides(toy_micro, override)))
    assert code == 2, err
    errors = [line for line in err.strip().splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0] and errors[0] == err.strip().splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_budget_to_break_and_capability_bound():
    data = {"d": {"defended": {"harmful_rate": 0.0, "benign_score": 1.0}, "attacked": [
        {"shots": 8, "setting": "a", "harmful_rate": 0.2, "benign_score": 0.9},
        {"shots": 8, "setting": "b", "harmful_rate": 0.9, "benign_score": 0.3},   # wrecked the model
        {"shots": 32, "setting": "a", "harmful_rate": 0.6, "benign_score": 0.85},
        {"shots": 32, "setting": "b", "harmful_rate": 1.0, "benign_score": 0.2}]}}
    entry = analyse(data, floor=0.8, threshold=0.5)["d"]
    assert entry["worst_case"] == {8: 0.9, 32: 1.0} and entry["budget_to_break"] == 8
    assert entry["worst_case_capability_bounded"] == {8: 0.2, 32: 0.6}
    assert entry["budget_to_break_capability_bounded"] == 32
    assert budget_to_break({8: 0.1, 32: 0.2}, 0.5) == "> 32"


def test_report_marks_unattacked_and_already_harmful_defenses():
    from sgt.report import markdown

    config = load_experiment(MICRO)
    data = analyse({
        "none": {"defended": {"harmful_rate": 0.99, "benign_score": 0.6}, "attacked": [], "under_attack": False},
        "weak": {"defended": {"harmful_rate": 0.7, "benign_score": 0.6}, "under_attack": True, "attacked": [
            {"shots": 8, "setting": "a", "seeds": 1, "harmful_rate": 0.9, "benign_score": 0.6}]},
        "skipped": {"defended": {"harmful_rate": 0.8, "benign_score": 0.6}, "attacked": [], "under_attack": True},
        "sft": {"defended": {"harmful_rate": 0.0, "benign_score": 0.6}, "under_attack": True, "attacked": [
            {"shots": 8, "setting": "a", "seeds": 1, "harmful_rate": 0.2, "benign_score": 0.6}]}}, floor=0.8, threshold=0.5)
    text = markdown(config, data, plots=[])
    assert "| skipped | not attacked (harmful before attack) |" in text  # attack.skip_broken
    data["later"] = analyse({"later": {"defended": None, "attacked": [], "under_attack": True}}, 0.8, 0.5)["later"]
    text = markdown(config, data, plots=[])
    assert "| later | not run yet | not run yet | not run yet | not run yet |" in text  # a run stopped before it
    assert text.count("| later | not run yet |") == 3  # summary, worst case, budget per setting
    assert "| none | 0.99 | 0.60 | 0 (harmful before attack) | 0 (harmful before attack) |" in text
    assert "| weak | 0.70 | 0.60 | 0 (harmful before attack) |" in text   # not 8: it never held
    assert "| none | not attacked |" in text and "| sft | > 8 |" in text


def test_report_flags_defenses_that_wreck_the_model_at_release():
    """A defense whose release keeps < capability_floor of the undefended base's benign score is
    flagged: its budgets to break say nothing (a wrecked model 'resists' every attack)."""
    from sgt.report import markdown

    config = load_experiment(MICRO)
    entries = {
        "none": {"undefended": True, "defended": {"harmful_rate": 0.99, "benign_score": 0.60}},
        "wrecked": {"defended": {"harmful_rate": 0.40, "benign_score": 0.47}},
        "kept": {"defended": {"harmful_rate": 0.10, "benign_score": 0.48}},   # exactly 80%
        "later": {"defended": None}}
    data = analyse({n: {**e, "attacked": [], "under_attack": n != "none"} for n, e in entries.items()}, 0.8, 0.5)
    assert [data[n]["usable_at_release"] for n in entries] == [True, False, True, None]
    text = markdown(config, data, plots=[])
    assert "| wrecked | 0.40 | 0.47 | no (0.47 < 80% of the base's 0.60) |" in text
    assert "| kept | 0.10 | 0.48 | yes |" in text and "| none | 0.99 | 0.60 | yes |" in text
    assert "| later | not run yet | not run yet | not run yet | not run yet | not run yet |" in text
    # without the undefended base in the run there is nothing to compare with: no column
    del data["none"]
    data = analyse(data, 0.8, 0.5)
    assert data["wrecked"]["usable_at_release"] is None
    assert "usable at release |" not in markdown(config, data, plots=[])


def test_paper_presets_pass_dry_run(tmp_path):
    for preset in sorted((ROOT / "configs" / "paper").glob("*.yaml")):
        code, out, err = run_cli("run", str(preset), "--out", str(tmp_path / preset.stem), "--dry-run")
        assert code == 0, err
        assert "judge=llm" in out and "PKU-Alignment/BeaverTails" in out and "allenai/wildguardmix" in out
        experiment = Experiment(load_experiment(preset), tmp_path)
        assert [d.kind for d in experiment.defenses] == ["none", "sft", "sgt"]


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")
                                            if "accelerate" not in p.parts))
def test_every_shipped_config_passes_dry_run(config, tmp_path):
    """A config in the repository that no longer parses is a broken promise to its reader."""
    code, out, err = run_cli("run", str(ROOT / config), "--out", str(tmp_path / "run"), "--dry-run")
    assert "attack grid:" in out and "evaluations:" in out
    values = "\n".join(line.split("#")[0] for line in (ROOT / config).read_text().splitlines())  # not comments
    needs = [n for n in re.findall(r"\bruns/[\w.-]+", values) if not Path(n).exists()]
    text = out + err
    problems = text.split("problem(s):", 1)[1].splitlines()[1:] if "problem(s):" in text else []
    problems = [line for line in problems if line.startswith("  - ")]
    for line in problems:
        # Only two problems are the machine's, not the config's: a tuning round's earlier run that is not
        # there yet, and a data package of `make install-real` that `make test` does not install.
        missing = re.search(r"the '(\w+)' package is not installed", line)
        if missing:
            assert importlib.util.find_spec(missing.group(1)) is None, line
        else:
            assert line.startswith("  - eval.") and any(n in line for n in needs), text
    assert code == (2 if problems else 0), err


@pytest.mark.slow
def test_report_command_refreshes_the_readme_block(finished_run, tmp_path):
    out, _, _ = finished_run
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-results:start -->\nold numbers\n<!-- demo-results:end -->\nrest\n")
    code, printed, err = run_cli("report", str(out), "--readme", str(readme), "--assets", str(tmp_path / "assets"))
    assert printed.splitlines()[0] == f"report: {out / 'report.md'} (data: results.json)"
    assert code == 0, err
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| sgt |" in text and "budget to break" in text and "wall time" in text
    assert "#### Summary" in text and "Every attack cell" not in text and "#### Plots" not in text
    assert (tmp_path / "assets" / "harm_vs_budget.png").is_file() and "](assets/harm_vs_budget.png)" in text
    code, _, err = run_cli("report", str(tmp_path))
    assert code == 2 and "not an `sgt run` folder" in err


@pytest.mark.slow
def test_training_stages_can_run_under_a_launcher(toy_micro, tmp_path):
    """`launcher:` runs each training stage as `LAUNCHER -m sgt.cli STAGE --config FILE` (as with
    `accelerate launch`); here the launcher is plain python, the same code path without GPUs."""
    import sys

    out = tmp_path / "launched"
    overrides = micro_overrides(toy_micro, f"launcher=[{sys.executable}]", "allow_code=true", "attack.shots=[4]",
                                "defenses=[{name: sft, epochs: 1, max_length: 96}]")
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args(overrides))
    assert code == 0, err
    assert (out / "defenses" / "sft" / "sft.config.yaml").is_file() and (out / "defenses" / "sft" / "sft.log").is_file()
    cell = next(out.glob("attacks/sft/*"))
    assert (cell / "attack.config.yaml").is_file()
    result = json.loads((cell / "result.json").read_text())
    assert result["attack"]["rows"] == 4 and result["harmful_rate"] is not None


def test_show_prints_every_field_with_its_help(toy_micro):
    code, out, err = run_cli("run", MICRO, "--show", *set_args(micro_overrides(toy_micro)))
    assert code == 0, err
    assert "attack:  # The attack grid" in out and "  shots: [4, 16]  # Data budgets" in out
    assert "judge_options: {}  # Options of the chosen judge" in out and "capability_floor: 0.8" in out
    code, _, err = run_cli("run", MICRO)
    assert code == 2 and "pass --out DIR" in err


@pytest.mark.slow
def test_defenses_trained_with_several_seeds_report_mean_and_range(toy_micro, tmp_path):
    out = tmp_path / "seeds"
    overrides = micro_overrides(toy_micro, "defenses=[{name: sft, epochs: 1, max_length: 96}]", "attack.shots=[4]",
                                "defense_seeds=[1, 2]", "attack.settings.save_at_examples=[4]")
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args(overrides))
    assert code == 0, err
    assert sorted(p.name for p in (out / "defenses").iterdir()) == ["sft@seed1", "sft@seed2"]
    assert len(list(out.glob("attacks/*/*/result.json"))) == 2  # the attack cell ran on each copy
    one = json.loads((out / "defenses" / "sft@seed1" / "result.json").read_text())["harmful_rate"]
    two = json.loads((out / "defenses" / "sft@seed2" / "result.json").read_text())["harmful_rate"]
    defended = json.loads((out / "results.json").read_text())["defenses"]["sft"]["defended"]
    assert defended["copies"] == 2 and defended["harmful_rate"] == pytest.approx((one + two) / 2)
    assert defended["harmful_rate_range"] == [min(one, two), max(one, two)]
    assert json.loads((out / "results.json").read_text())["defenses"]["sft"]["attacked"][0]["seeds"] == 2
    assert "trained with 2 seeds" in (out / "report.md").read_text()
    # the intermediate checkpoint after 4 examples gave a point on a harm-vs-examples curve
    (row,) = json.loads((out / "results.json").read_text())["defenses"]["sft"]["attacked"]
    assert [p["examples"] for p in row["curve"]] == [4] and (out / "harm_vs_examples.png").is_file()


@pytest.mark.slow
def test_searched_attacker_runs_resumes_and_is_reported(toy_micro, tmp_path):
    out = tmp_path / "search"
    search = "attack.search={trials: 2, shots: 8, lr: [1.0e-4, 3.0e-3], epochs: [1, 2], batch_size: [8], lora: [false]}"
    base = micro_overrides(toy_micro, "defenses=[{name: none}]", "attack.shots=[4]")
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args([*base, search]))
    assert code == 0, err
    found = json.loads((out / "search" / "none.json").read_text())
    assert len(found["trials"]) == 2 and found["best"]["value"] == max(t["value"] for t in found["trials"])
    assert all(1e-4 <= t["params"]["lr"] <= 3e-3 for t in found["trials"])
    report = (out / "report.md").read_text()
    assert "## Searched attacker" in report and (out / "search.png").is_file()
    # more trials later: the study resumes (the 2 done trials are kept), only 1 new trial runs
    code, _, err = run_cli("run", MICRO, "--out", str(out), "--force", *set_args([*base, search.replace("trials: 2", "trials: 3")]))
    assert code == 0, err
    assert len(json.loads((out / "search" / "none.json").read_text())["trials"]) == 3 and err.count("[search none]") == 1


def test_search_objective_penalises_lost_capability():
    from sgt.experiment.search import objective_value

    assert objective_value(0.9, 0.85, 1.0, 0.8) == 0.9
    assert objective_value(1.0, 0.5, 1.0, 0.8) == 0.0  # wrecked the model: below any valid attack
    assert objective_value(None, 0.9, 1.0, 0.8) == -1.0


def test_extra_grids_and_unattacked_defenses(toy_micro, tmp_path):
    from sgt.experiment.plan import grid_cells

    config = load_experiment(MICRO, micro_overrides(toy_micro, "attack.extra=[{lr: [3.0e-4], lora: [true]}, {shots: [4]}]",
                                                    "defenses=[{name: none, attacked: false}, {name: sft}]"))
    cells = grid_cells(config.attack)
    assert [(c.shots, c.lr, c.lora) for c in cells] == [(4, 1e-3, False), (16, 1e-3, False), (4, 3e-4, True),
                                                         (16, 3e-4, True)]  # {shots: [4]} repeats a cell: once
    code, out, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), "--dry-run", *set_args(micro_overrides(
        toy_micro, "attack.extra=[{lr: [3.0e-4], lora: [true]}]", "defenses=[{name: none, attacked: false}, {name: sft}]")))
    assert code == 0, err
    assert "none: base model as is (not attacked)" in out and "evaluations: 6 " in out  # 1 + (1 + 4)
    assert "+ {'lr': [0.0003], 'lora': [True]}" in out
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "y"), *set_args(micro_overrides(
        toy_micro, "attack.extra=[{learning_rate: [1]}]")))
    assert code == 2 and "attack.extra entries are partial grids" in err


def test_run_timing_adds_up_invocations_and_says_whether_the_world_was_built(tmp_path):
    from sgt.experiment.clock import RunClock
    from sgt.report import timing_text

    world = tmp_path / "world"
    world.mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"wall_seconds": 600.0, "finished": "x"}))  # an older sgt's file
    clock = RunClock(tmp_path, world)          # no world.json yet: this invocation builds it
    (world / "world.json").write_text(json.dumps({"build_seconds": 240.0}))
    clock.start -= 60
    total = clock.tick()
    run = json.loads((tmp_path / "run.json").read_text())
    assert 659.9 < total < 661 and [i["world"] for i in run["invocations"]] == [None, "built"]
    assert timing_text(run) == "wall time 11.0 min over 2 invocations (world build included)"
    clock = RunClock(tmp_path, world)          # resumed: the world is cached now
    clock.start -= 120
    run_total = clock.tick()
    assert 779.9 < run_total < 781 and len(json.loads((tmp_path / "run.json").read_text())["invocations"]) == 3
    assert timing_text({"wall_seconds": 120, "invocations": [{"world": "cached"}], "world_build_seconds": 240}) == \
        "wall time 2.0 min (world reused from the cache; building it took 4.0 min more)"


def test_a_run_folder_can_be_moved_without_retraining(tmp_path, monkeypatch):
    """defense.json records a defended model inside its folder relative to that folder: a run folder
    copied or moved elsewhere (or resumed from another working directory) finds its own models."""
    import shutil

    from sgt.experiment.store import model_entry, model_path

    folder = tmp_path / "runs" / "a" / "defenses" / "sft"
    (folder / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    entry = model_entry("runs/a/defenses/sft/model", Path("runs/a/defenses/sft"))
    assert entry == {"model": "model", "model_in_folder": True}
    shutil.move(tmp_path / "runs" / "a", tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")
    assert Path(model_path(entry, Path("defenses/sft"))).resolve() == (tmp_path / "b" / "defenses" / "sft" / "model")
    assert model_entry("HuggingFaceTB/SmolLM2-135M-Instruct", folder) == {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def test_sgt_variants_with_the_same_stage_1_share_one_trigger(toy_micro, tmp_path):
    """Stage 1 is stored by its settings' fingerprint in the run folder: variants that differ only in stage 2
    point at one trigger (trained once), a different stage 1 at another, and the drift reference follows."""
    trigger = "{length: 2, tied: false, lr: 0.03, epochs: 1}"
    config = load_experiment(MICRO, micro_overrides(
        toy_micro, f"defenses=[{{name: a, defense: sgt, trigger: {trigger}}}, "
                   f"{{name: b, defense: sgt, trigger: {trigger}, align: {{distill_weight: 1.0}}}}, "
                   f"{{name: c, defense: sgt, trigger: {{length: 3, tied: false}}}}]", "eval.drift.trigger=b"))
    experiment = Experiment(config, tmp_path / "run")
    paths = {d.name: d.trigger_path(tmp_path / "run" / "defenses" / d.name) for d in experiment.defenses}
    assert paths["a"] == paths["b"] != paths["c"] and paths["a"].parent == tmp_path / "run" / "triggers"
    assert experiment.drift_trigger == paths["b"]


def test_an_evaluation_reports_the_time_it_took_once(tmp_path, monkeypatch):
    """An evaluation's seconds = answering + judging, each counted once (answering used to be counted
    twice, which doubled every per-cell time in the run log); kept answers bring their own time."""
    from sgt.experiment import store as store_module

    clock = iter(range(0, 1000, 10))  # each call of time.time() is 10 s later than the one before
    monkeypatch.setattr(store_module.time, "time", lambda: next(clock))

    class Keys:
        def digests(self, key):
            return ["answers-v1"], "judged-v1"

    class Judge:
        def judge(self, answered):
            return {"harmful_rate": 0.5, "benign_score": None}

    store = store_module.ResultStore(tmp_path, Keys())
    result = store.evaluate(tmp_path / "cell", {}, "cell", lambda: {"answers": []}, Judge())
    # t0 = 0; answers done at 10 -> 10 s; judging starts at 20, ends at 30 -> 10 s: 20 s in all
    assert result["seconds"] == 20.0
    (tmp_path / "cell" / "result.json").unlink()  # judge the kept answers again: their 10 s + judging
    again = store.evaluate(tmp_path / "cell", {}, "cell", lambda: pytest.fail("answers were kept"), Judge())
    assert again["seconds"] == 20.0
