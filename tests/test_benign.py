"""Benign capability: the lm-evaluation-harness bridge (checked against a direct log-likelihood
computation), exact match on the toy world's file, the CLI, and one-line errors. Offline, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from sgt.errors import UserError
from sgt.evaluation.benign import BenignEvalConfig, evaluate_benign, summarize_lm_eval

pytest.importorskip("lm_eval")

LIMIT = 12


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine a 2-thread pool makes each
    forward pass ~300x slower (threads wait for each other), so these tests use one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def toy_model(toy_micro):
    from sgt.models import load_model, load_tokenizer

    base = str(toy_micro / "base")
    return load_model(base, "float32", device="cpu").eval(), load_tokenizer(base)


@pytest.fixture(scope="module")
def bridge_run(toy_micro, toy_model, tmp_path_factory):
    """One lm-eval run on the toy task (0-shot, first LIMIT documents), written to disk."""
    out = tmp_path_factory.mktemp("benign") / "run"
    config = BenignEvalConfig(model=str(toy_micro / "base"), out=str(out), num_fewshot=0, limit=LIMIT,
                              tasks=[str(toy_micro / "tasks" / "toy_mc.yaml")], progress=False)
    metrics = evaluate_benign(config, model=toy_model[0], tokenizer=toy_model[1])
    return metrics, out


def direct_loglikelihoods(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """Sum of log p(choice tokens | context), computed here without lm-eval."""
    import torch

    scores = []
    for choice in choices:
        whole = tokenizer(context + " " + choice)["input_ids"]
        n_context = len(tokenizer(context)["input_ids"])
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0].float()
        logprobs = torch.log_softmax(logits[:-1], dim=-1)
        targets = torch.tensor(whole[1:])
        token_scores = logprobs[torch.arange(len(targets)), targets]
        scores.append(float(token_scores[n_context - 1:].sum()))
    return scores


def test_bridge_writes_one_entry_per_task(bridge_run):
    metrics, out = bridge_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tasks"] == metrics["tasks"]
    entry = saved["tasks"]["toy_mc"]
    assert 0.0 <= entry["acc"] <= 1.0
    assert entry["n"] == LIMIT
    assert entry["num_fewshot"] == 0
    assert (out / "config.yaml").is_file()
    assert not (out.parent / "run.partial").exists()


def test_bridge_matches_direct_loglikelihood(bridge_run, toy_micro, toy_model):
    """Same log-likelihoods per choice and the same accuracy as scoring the documents ourselves."""
    _, out = bridge_run
    model, tokenizer = toy_model
    docs = read_jsonl(toy_micro / "data" / "benign_mc.jsonl")[:LIMIT]
    samples = {s["doc_id"]: s for s in read_jsonl(out / "lm_eval_samples.jsonl")}
    assert sorted(samples) == list(range(LIMIT))
    correct = []
    for doc_id, doc in enumerate(docs):
        ours = direct_loglikelihoods(model, tokenizer, f"User: {doc['question']}\nAssistant:", doc["choices"])
        theirs = [resp[0] for resp in samples[doc_id]["responses"]]
        assert theirs == pytest.approx(ours, abs=1e-3)
        correct.append(max(range(len(ours)), key=ours.__getitem__) == doc["label"])
    assert json.loads((out / "metrics.json").read_text())["tasks"]["toy_mc"]["acc"] == pytest.approx(
        sum(correct) / len(correct))


def test_local_group_folder_reports_group_and_subtasks(toy_micro, toy_model, tmp_path):
    """A folder holding a group and its tasks runs the group once (like mmlu) with n summed over tasks."""
    task = (toy_micro / "tasks" / "toy_mc.yaml").read_text()
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("toy_a", "toy_b"):
        (folder / f"{name}.yaml").write_text(task.replace("task: toy_mc", f"task: {name}"))
    (folder / "group.yaml").write_text(
        "group: toy_group\ntask:\n  - toy_a\n  - toy_b\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\nmetadata:\n  version: 1.0\n")
    config = BenignEvalConfig(model="toy", tasks=[str(folder)], num_fewshot=0, limit=3, progress=False)
    metrics = evaluate_benign(config, model=toy_model[0], tokenizer=toy_model[1], write=False)
    entry = metrics["tasks"]["toy_group"]
    assert list(metrics["tasks"]) == ["toy_group"]
    assert entry["n"] == 6 and set(entry["subtasks"]) == {"toy_a", "toy_b"}
    assert entry["acc"] == pytest.approx(sum(s["acc"] for s in entry["subtasks"].values()) / 2)


def test_summarize_nested_groups_and_filters():
    results = {
        "results": {"g": {"acc,none": 0.5, "acc_stderr,none": "N/A"}, "sub": {"acc,none": 0.4},
                    "t1": {"acc,none": 0.25, "alias": "t1"}, "t2": {"acc,none": 0.75},
                    "t3": {"exact_match,strict-match": 1.0}},
        "group_subtasks": {"g": ["sub", "t3"], "sub": ["t1", "t2"]},
        "n-samples": {"t1": {"effective": 4}, "t2": {"effective": 6}, "t3": {"effective": 5}},
        "n-shot": {"t1": 5, "t2": 5, "t3": 5},  # lm-eval leaves nested groups out
    }
    entries = summarize_lm_eval(results, ["g", "t1"])
    assert entries["g"]["acc"] == 0.5 and entries["g"]["acc_stderr"] is None
    assert entries["g"]["num_fewshot"] == 5
    assert entries["g"]["n"] == 15 and set(entries["g"]["subtasks"]) == {"t1", "t2", "t3"}
    assert entries["g"]["subtasks"]["t3"] == {"exact_match/strict-match": 1.0, "n": 5}
    assert entries["t1"] == {"acc": 0.25, "n": 4, "num_fewshot": 5}


def test_exact_match_file_by_family(toy_micro, toy_model, tmp_path):
    data = toy_micro / "data" / "benign_eval.jsonl"
    config = BenignEvalConfig(model="toy", out=str(tmp_path / "em"), tasks=[], exact_match=str(data),
                              progress=False)
    metrics = evaluate_benign(config, model=toy_model[0], tokenizer=toy_model[1])
    rows = read_jsonl(tmp_path / "em" / "generations.jsonl")
    source = read_jsonl(data)
    assert [r["answer"] for r in rows] == [s["answer"] for s in source]
    recomputed = [r["response"].strip().lower() == r["answer"].strip().lower() for r in rows]
    entry = metrics["tasks"]["exact_match"]
    assert entry["n"] == len(source) and entry["accuracy"] == pytest.approx(sum(recomputed) / len(rows))
    for family, stats in entry["by_family"].items():
        hits = [ok for ok, r in zip(recomputed, rows) if r["family"] == family]
        assert stats == {"accuracy": pytest.approx(sum(hits) / len(hits)), "n": len(hits)}
    assert sum(s["n"] for s in entry["by_family"].values()) == len(rows)
    assert list(metrics["tasks"]) == ["exact_match"]


def test_cli_writes_files(toy_micro, tmp_path):
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli(
        "eval", "benign", "--model", str(toy_micro / "base"), "--tasks", str(toy_micro / "tasks"),
        "--exact-match", str(toy_micro / "data" / "benign_eval.jsonl"), "--limit", "5", "--num-fewshot", "1",
        "--out", str(out), "--no-progress")
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"toy_mc", "exact_match"}
    assert metrics["tasks"]["toy_mc"]["n"] == 5 and metrics["tasks"]["toy_mc"]["num_fewshot"] == 1
    assert metrics["tasks"]["exact_match"]["n"] == 5
    assert len(read_jsonl(out / "generations.jsonl")) == 5
    assert json.loads(stdout)["tasks"]["toy_mc"]["n"] == 5
    assert {"config.yaml", "lm_eval_samples.jsonl"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("args, message", [
    (["--tasks", "no_such_task_xyz"], "unknown lm-eval task 'no_such_task_xyz'"),
    (["--tasks", "", "--exact-match", "missing/benign.jsonl"], "data file not found"),
    (["--tasks", ""], "nothing to evaluate"),
    (["--tasks", "missing/task.yaml"], "task file not found"),
])
@pytest.mark.slow
def test_cli_errors_are_one_line(toy_micro, tmp_path, args, message):
    code, _, stderr = run_cli("eval", "benign", "--model", str(toy_micro / "base"),
                              "--out", str(tmp_path / "x"), *args)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_default_tasks_are_registered():
    """MMLU and OpenBookQA (the reference's tasks) resolve in the installed lm-eval, without loading data."""
    from sgt.evaluation.benign import plan_tasks, task_manager

    manager = task_manager(plan_tasks(["mmlu", "openbookqa"]))
    assert "mmlu" in manager.all_groups and "openbookqa" in manager.all_subtasks


def test_config_validation():
    with pytest.raises(UserError, match="limit"):
        BenignEvalConfig(limit=0)
    with pytest.raises(UserError, match="format"):
        BenignEvalConfig(format="xml")
    assert BenignEvalConfig().tasks == ["mmlu", "openbookqa"]
    assert (BenignEvalConfig().num_fewshot, BenignEvalConfig().batch_size) == (5, 8)
