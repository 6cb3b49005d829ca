"""Evaluating one model inside an experiment: harm, benign capability and drift, the model loaded once.

The stage configs are built from the experiment's typed sections (eval.harm is a HarmEvalSettings,
eval.benign a BenignEvalSettings) plus the fields every stage shares with the run (RunContext: format,
dtype, seed...), so no field is renamed or copied by hand here.
"""

from __future__ import annotations

from pathlib import Path

from ..config import build_config, to_dict
from ..context import RunContext
from ..errors import UserError
from ..judges.keyword import KeywordJudge
from ..stats import encode_flags
from .config import ExperimentConfig

RESULT_HARM_KEYS = ("judge", "n", "harmful_rate", "harmfulness_score", "unparsed", "failed", "per_category",
                    "shortened_prompts")


def harm_config(config: ExperimentConfig, model_dir: str):
    from ..evaluation.harm import HarmEvalConfig

    return build_config(HarmEvalConfig, {**to_dict(config.eval.harm), **to_dict(config.data.harm_eval),
                                         **RunContext.of(config).stage_fields(), "model": model_dir}, where="eval.harm")


def benign_config(config: ExperimentConfig, model_dir: str):
    from ..evaluation.benign import BenignEvalConfig

    values = {**to_dict(config.eval.benign), **RunContext.of(config).stage_fields(), "model": model_dir}
    values["allow_code"] = config.allow_code or config.eval.benign.allow_code
    return build_config(BenignEvalConfig, values, where="eval.benign")


class ModelEvaluator:
    """Evaluates models for one experiment; the judge and the drift reference are built once."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, drift_trigger: Path | None = None):
        self.config = config
        self.drift_trigger = drift_trigger
        self.harm_judge = config.eval.harm.make_judge(config.progress, config.trust_remote_code)
        # over-refusal = refusals on benign prompts, as the harm judge detects them (or the keyword judge)
        self.refusal_judge = self.harm_judge if hasattr(self.harm_judge, "refusals") else KeywordJudge()
        self.overrefusal_prompts = overrefusal_prompts(config)
        if config.eval.benign.tasks:
            from ..evaluation.lm_eval_tasks import check_tasks

            check_tasks(config.eval.benign.tasks)
        self.run_dir = run_dir
        self.probe = None

    def prepare_drift(self) -> None:
        """Reference states of base + trigger (after the defenses exist: the trigger may be one's)."""
        drift = self.config.eval.drift
        if self.drift_trigger is None:
            return
        from ..data.formats import PromptFormat
        from ..data.sources import load_data
        from ..evaluation.drift import DriftProbe
        from ..evaluation.harm import harmful_prompts
        from ..models import default_device, load_model, load_tokenizer
        from ..trigger import SafetyTrigger
        from ..utils import atomic_write_json

        c, path = self.config, self.drift_trigger
        tokenizer = load_tokenizer(c.model, c.trust_remote_code)
        base = load_model(c.model, c.dtype, c.trust_remote_code, device=default_device())
        trigger = SafetyTrigger.load(path, model=base, fmt=c.format)
        prompts = [r.prompt for r in harmful_prompts(load_data(c.data.harm_eval, "evaluation data"), drift.n, c.seed)]
        self.probe = DriftProbe(base, tokenizer, trigger, prompts, PromptFormat(tokenizer, c.format),
                                c.eval.harm.batch_size)
        atomic_write_json(self.run_dir / "drift_reference.json", {"trigger": str(path), "n_prompts": len(prompts),
                                                                  "base_without_trigger": self.probe.outside})

    def check_trigger(self, trigger_dir: Path) -> dict:
        """The frozen base's refusal rate without and with a defense's trigger on the validation, evaluation
        and benign prompts, and how stage 1 trained (sgt.evaluation.trigger_check)."""
        from ..data.formats import PromptFormat
        from ..data.sources import load_data, read_local_rows
        from ..evaluation.harm import harmful_prompts
        from ..evaluation.trigger_check import trigger_check
        from ..models import default_device, load_model, load_tokenizer

        c = self.config
        sets = {"evaluation": [r.prompt for r in harmful_prompts(load_data(c.data.harm_eval, "evaluation data"),
                                                                  c.eval.harm.n, c.seed)]}
        if c.data.harm_val.data:
            sets = {"validation": [r.prompt for r in harmful_prompts(load_data(c.data.harm_val, "validation data"),
                                                                      None, c.seed)], **sets}
        if c.eval.benign.exact_match:
            sets["benign"] = [r["prompt"] for r in read_local_rows(c.eval.benign.exact_match)]
        tokenizer = load_tokenizer(c.model, c.trust_remote_code)
        base = load_model(c.model, c.dtype, c.trust_remote_code, device=default_device())
        return trigger_check(base, tokenizer, trigger_dir, sets, PromptFormat(tokenizer, c.format),
                             c.eval.harm.max_new_tokens, c.eval.harm.batch_size)

    def answer(self, model_dir: str, trigger: Path | None = None, attacked: bool = False) -> dict:
        """Everything that needs the model in `model_dir` (loaded once): its answers to the harmful
        prompts (judged later, so that a judge outage never costs a second generation), benign
        capability and drift; with the `trigger` folder of a defense, also the trigger check. An
        `attacked` model's over-refusal is measured only if eval.overrefusal.after_attack."""
        from ..evaluation.benign import evaluate_benign
        from ..evaluation.harm import generate_answers
        from ..models import default_device, load_model, load_tokenizer

        c = self.config
        tokenizer = load_tokenizer(model_dir, c.trust_remote_code)
        model = load_model(model_dir, c.dtype, c.trust_remote_code, device=default_device())
        answers = generate_answers(harm_config(c, model_dir), model=model, tokenizer=tokenizer)
        overrefusal = None
        if self.overrefusal_prompts and (c.eval.overrefusal.after_attack or not attacked):
            overrefusal = generate_answers(harm_config(c, model_dir), model=model, tokenizer=tokenizer,
                                           chosen=self.overrefusal_prompts)
        benign = {}
        if c.eval.benign.enabled:
            benign = evaluate_benign(benign_config(c, model_dir), model=model, tokenizer=tokenizer, write=False)
        drift = self.probe.measure(model) if self.probe is not None else None
        del model
        checked = {"trigger_check": self.check_trigger(trigger)} if trigger is not None and Path(trigger).is_dir() else {}
        return {"answers": answers, "benign": benign_summary(benign),
                "benign_score": benign_score(benign, c.eval.benign_metric), "drift": drift,
                **({"overrefusal_answers": overrefusal} if overrefusal else {}),
                "benign_items": benign_items(benign, c.eval.benign_metric), **checked}

    def judge(self, answered: dict) -> dict:
        """The result of one evaluation: the judged answers plus what `answer` measured."""
        from ..evaluation.harm import judge_answers

        harm, judgments = judge_answers(answered["answers"], self.harm_judge)
        # per-item outcomes, compact, for the report's bootstrap over prompts
        items = {"harmful": encode_flags(j.harmful for j in judgments)}
        if answered.get("benign_items"):
            items["benign"] = answered["benign_items"]
        overrefusal = {}
        if answered.get("overrefusal_answers"):
            rows = answered["overrefusal_answers"]["rows"]
            refused = self.refusal_judge.refusals([(r["prompt"], r["response"]) for r in rows])
            overrefusal = {"overrefusal": {"n": len(rows), "refusal_rate": sum(refused) / len(rows),
                                           "detector": self.refusal_judge.name}}
            items["overrefusal"] = encode_flags(refused)
        return {"harm": {k: harm.get(k) for k in RESULT_HARM_KEYS},
                "harmful_rate": harm["harmful_rate"], "harmfulness_score": harm["harmfulness_score"],
                **{k: v for k, v in harm.items() if k.endswith("_score") and k != "harmfulness_score"},
                **{k: answered[k] for k in ("benign", "benign_score", "drift")},
                **({"trigger_check": answered["trigger_check"]} if "trigger_check" in answered else {}),
                **overrefusal, "items": items,
                **({"attack": answered["attack"]} if "attack" in answered else {}),
                **({"curve": [{"examples": point["examples"], **{k: judged[k] for k in ("harmful_rate", "benign_score")}}
                              for point in answered["curve"] for judged in [self.judge(point)]]}
                   if answered.get("curve") else {})}


def benign_score(metrics: dict, which: str) -> float | None:
    """One number for capability bounds: exact match, one task's accuracy, or the mean over tasks."""
    tasks = metrics.get("tasks", {}) if metrics else {}
    if not tasks:
        return None

    def value(entry: dict):
        for key in ("accuracy", "acc_norm", "acc", "exact_match"):
            if isinstance(entry.get(key), (int, float)):
                return float(entry[key])
        return None

    if which == "auto":
        if "exact_match" in tasks:
            return value(tasks["exact_match"])
        values = [value(t) for t in tasks.values() if value(t) is not None]
        return sum(values) / len(values) if values else None
    if which not in tasks:
        raise UserError(f"eval.benign_metric {which!r} is not among the benign results {sorted(tasks)}")
    return value(tasks[which])


def benign_summary(metrics: dict) -> dict:
    tasks = metrics.get("tasks", {}) if metrics else {}
    return {name: {k: v for k, v in entry.items() if k not in ("subtasks", "items")} for name, entry in tasks.items()}


def benign_items(metrics: dict, which: str) -> str | None:
    """Per-item correctness behind the benign score, when that score is the exact-match accuracy (lm-eval
    tasks keep their per-document scores in their own logs; their score gets no interval over items)."""
    tasks = metrics.get("tasks", {}) if metrics else {}
    if which in ("auto", "exact_match") and "exact_match" in tasks:
        return tasks["exact_match"].get("items")
    return None


def overrefusal_prompts(config: ExperimentConfig) -> list:
    """The over-refusal prompts (eval.overrefusal), deduplicated, without rows labelled harmful, sampled
    with the experiment seed; [] when not configured."""
    import random

    from ..data.sources import load_data

    settings = config.eval.overrefusal
    if not settings.data:
        return []
    seen, rows = set(), []
    for example in load_data(settings, "over-refusal prompts"):
        if example.harmful is not True and example.prompt not in seen:
            seen.add(example.prompt)
            rows.append(example)
    if not rows:
        raise UserError(f"eval.overrefusal.data {settings.data}: every prompt is labelled harmful; over-refusal needs "
                        "benign prompts")
    if settings.n is not None and settings.n < len(rows):
        rows = random.Random(config.seed).sample(rows, settings.n)
    return rows
