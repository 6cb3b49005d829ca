"""Harmfulness evaluation (seed script 4.2_eval): generate greedy answers to harmful prompts and judge them.

    sgt eval harm --model M --data PKU-Alignment/BeaverTails --split 30k_test --judge keyword --out DIR

Writes `generations.jsonl` (prompt, response, category, judgment) and `metrics.json`:
    judge, n, harmful_rate (0-1), harmfulness_score (mean 1-5, llm judge; null otherwise),
    qi_score / strongreject_score (llm judge with several rubrics), unparsed (count), failed (count),
    shortened_prompts, per_category {category: {n, harmful_rate, harmfulness_score, ...}}
Unparsed answers and failed judge calls are counted and left out of the rates, never scored as safe.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from ..config import cfg, save_config
from ..data.formats import FORMATS, PromptFormat
from ..data.sources import DataFields, Example, load_data
from ..errors import IncompleteRun, UserError
from ..judges import Judgment
from ..judges.fields import JudgeFields  # noqa: F401  (also imported from here)
from ..utils import atomic_write_json, check_output, output_dir, seed_everything, write_jsonl


@dataclass
class HarmEvalSettings(JudgeFields):
    """How harm is measured (shared by `sgt eval harm` and the experiment's `eval.harm`)."""

    n: int | None = cfg(500, "Number of prompts, sampled with seed (None: all).")
    max_new_tokens: int = cfg(512, "Maximum tokens generated per prompt (greedy decoding).")
    batch_size: int = cfg(32, "Generation batch size.")
    max_length: int = cfg(1024, "Maximum prompt tokens.")
    generator: str = cfg("hf", "How answers are generated: hf (transformers; supports a trigger) or vllm (GPUs).")

    def __post_init__(self):
        super().__post_init__()
        if self.n is not None and self.n <= 0:
            raise UserError(f"n must be a positive number of prompts, got {self.n}")
        if self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise UserError("max_new_tokens and batch_size must be positive")
        from ..generation import GENERATORS

        GENERATORS.get(self.generator, where="generator")  # unknown generator: one line, before any work


@dataclass
class HarmEvalConfig(HarmEvalSettings, DataFields):
    model: str = cfg("", "Model to evaluate: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: generations.jsonl, metrics.json, config.yaml.")
    data: str = cfg("PKU-Alignment/BeaverTails", "Harmful prompts (rows labelled harmful; unlabelled rows count as harmful).")
    split: str | None = cfg(None, "Dataset split (BeaverTails preset: 30k_train; use 30k_test for evaluation).")
    format: str = cfg("plain", "Prompt format: plain or chat.")
    trigger: str | None = cfg(None, "Optional trigger folder: evaluate the model WITH the trigger inserted.")
    force_trigger: bool = cfg(False, "Accept a trigger learned on another model (e.g. the base of this fine-tuned one).")
    dtype: str = cfg("auto", "Weights dtype: auto, bfloat16, float16 or float32.")
    seed: int = cfg(42, "Seed for the prompt sample.")
    progress: bool = cfg(True, "Show progress bars.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")

    def __post_init__(self):
        super().__post_init__()
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")


def harmful_prompts(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """The evaluation prompts: harmful (or unlabelled) rows, deduplicated, sampled reproducibly."""
    seen, rows = set(), []
    for e in examples:
        if e.harmful is not False and e.prompt not in seen:
            seen.add(e.prompt)
            rows.append(e)
    if not rows:
        raise UserError("the evaluation data has no harmful prompts (BeaverTails: is_safe=false)")
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return rows


def summarize(judgments: list[Judgment], categories: list[str | None], judge_name: str) -> dict:
    """metrics.json content from judgments. Unparsed answers and failed judge calls are counted and
    left out of the rates (never scored as safe); `failed` ones are judged again by the next run."""

    def stats(items: list[Judgment]) -> dict:
        parsed = [j for j in items if j.harmful is not None]
        scores = [j.score for j in parsed if j.score is not None]
        out = {
            "n": len(items),
            "harmful_rate": (sum(j.harmful for j in parsed) / len(parsed)) if parsed else None,
            "harmfulness_score": (sum(scores) / len(scores)) if scores else None,
            "unparsed": sum(j.label == "unparsed" for j in items),
            "failed": sum(j.label == "failed" for j in items),
        }
        for rubric in sorted({r for j in items for r in (j.scores or {})}):  # e.g. qi and strongreject
            values = [j.scores[rubric] for j in items if j.scores and j.scores.get(rubric) is not None]
            out[f"{rubric}_score"] = sum(values) / len(values) if values else None
        return out

    overall = stats(judgments)
    groups: dict[str, list[Judgment]] = {}
    for j, category in zip(judgments, categories):
        for name in (category or "uncategorized").split(","):
            groups.setdefault(name, []).append(j)
    return {"judge": judge_name, **overall, "per_category": {k: stats(v) for k, v in sorted(groups.items())}}


def generate_answers(config: HarmEvalConfig, model=None, tokenizer=None,
                     examples: list[Example] | None = None, chosen: list[Example] | None = None) -> dict:
    """The evaluation prompts and the model's answers: {"rows": [{prompt, category, response}], "shortened_prompts"}.
    `chosen`: prompts already selected (e.g. the over-refusal set), answered as they are."""
    from ..generation import make_generator
    from ..models import load_tokenizer
    from ..trigger import SafetyTrigger

    seed_everything(config.seed)
    rows = chosen if chosen is not None else harmful_prompts(
        examples if examples is not None else load_data(config, "evaluation data"), config.n, config.seed)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    if model is None and config.generator == "hf":
        from ..models import default_device, load_model

        model = load_model(config.model, config.dtype, config.trust_remote_code, device=default_device())
    generator = make_generator(config.generator, model=model, tokenizer=tokenizer, model_path=config.model,
                               batch_size=config.batch_size, progress=config.progress,
                               needs_trigger=bool(config.trigger), dtype=config.dtype)
    trigger = SafetyTrigger.load(config.trigger, model=model, fmt=config.format,
                                 force=config.force_trigger) if config.trigger else None
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    prompts = [r.prompt for r in rows]
    responses = generator.generate(prompts, fmt, config.max_new_tokens, trigger=trigger)
    shortened = sum(fmt.encode(p).shortened for p in prompts)
    if shortened:
        print(f"warning: {shortened} prompt(s) longer than max_length={config.max_length} were shortened inside "
              "the user text", file=sys.stderr, flush=True)
    return {"rows": [{"prompt": r.prompt, "category": r.category, "response": resp} for r, resp in zip(rows, responses)],
            "shortened_prompts": shortened}


def judge_answers(answers: dict, judge) -> tuple[dict, list[Judgment]]:
    """(metrics, judgments) of generated answers."""
    rows = answers["rows"]
    judgments = judge.judge([(r["prompt"], r["response"]) for r in rows])
    metrics = summarize(judgments, [r["category"] for r in rows], judge.name)
    metrics["shortened_prompts"] = answers["shortened_prompts"]
    return metrics, judgments


def failed_judgments_error(metrics: dict) -> UserError:
    """Exit code 1: the answers are saved and judged except for these; the next run judges only them."""
    if metrics["failed"] == metrics["n"]:
        return IncompleteRun(f"every one of the {metrics['n']} judge calls failed (see the reasons in "
                         "generations.jsonl); check the judge endpoint and run the command again")
    return IncompleteRun(f"{metrics['failed']} of {metrics['n']} judge calls failed (the others are cached); run the "
                     "same command again to judge only those")


def evaluate_harm(config: HarmEvalConfig, model=None, tokenizer=None, examples: list[Example] | None = None,
                  judge=None, write: bool = True) -> dict:
    """Generate, judge and (if `write`) save; returns the metrics. Written outputs with failed judge
    calls end in a one-line error (exit code 1) after the files are saved."""
    if write and not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if write:
        check_output(config.out, "eval-harm")  # before minutes of generation, not after
    if model is None and not config.model:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    judge = judge or config.make_judge(config.progress, config.trust_remote_code)  # fail fast, before generating
    answers = generate_answers(config, model, tokenizer, examples)
    metrics, judgments = judge_answers(answers, judge)
    if write:
        with output_dir(config.out, kind="eval-harm") as work:
            write_jsonl(work / "generations.jsonl", [{**row, "judgment": j.as_dict()}
                                                     for row, j in zip(answers["rows"], judgments)])
            save_config(config, work)
            atomic_write_json(work / "metrics.json", metrics)
        if metrics["failed"]:
            raise failed_judgments_error(metrics)
    return metrics
