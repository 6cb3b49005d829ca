"""Harmfulness evaluation (seed script 4.2_eval): generate greedy answers to harmful prompts and judge them.

    sgt eval harm --model M --data PKU-Alignment/BeaverTails --split 30k_test --judge keyword --out DIR

Writes `generations.jsonl` (prompt, response, category, judgment) and `metrics.json`:
    judge, n, harmful_rate (0-1), harmfulness_score (mean 1-5, llm judge; null otherwise),
    unparsed (count), per_category {category: {n, harmful_rate, harmfulness_score}}
Unparsed judgments are counted and left out of the rates, never scored as safe.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from ..config import cfg, save_config
from ..data.formats import FORMATS, PromptFormat
from ..data.sources import DataFields, Example, load_data
from ..errors import UserError
from ..judges import Judgment, judge_options, make_judge, options_help
from ..utils import atomic_write_json, check_output, output_dir, seed_everything, write_jsonl


@dataclass
class JudgeFields:
    """Which judge scores the answers, and its options (validated against that judge's Options)."""

    judge: str = cfg("keyword", "Judge: keyword (offline refusal phrases), llm (OpenAI-compatible endpoint) "
                                "or classifier (local Hugging Face guard/classifier).")
    judge_options: dict = cfg({}, "Options of the chosen judge: a YAML mapping, or key=value,... on the command "
                                  "line. " + options_help() + ".")

    def __post_init__(self):
        self.judge_options = {k: v for k, v in self.judge_options.items()}
        judge_options(self.judge, self.judge_options)  # unknown judge or option: one line, before any work

    def make_judge(self, progress: bool = False, trust_remote_code: bool = False):
        return make_judge(self.judge, self.judge_options, progress=progress, trust_remote_code=trust_remote_code)


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
        from ..generation import generator_class

        generator_class(self.generator)  # unknown generator: one line, before any work


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
    """metrics.json content from judgments (unparsed ones are counted, not scored)."""

    def stats(items: list[Judgment]) -> dict:
        parsed = [j for j in items if j.harmful is not None]
        scores = [j.score for j in parsed if j.score is not None]
        return {
            "n": len(items),
            "harmful_rate": (sum(j.harmful for j in parsed) / len(parsed)) if parsed else None,
            "harmfulness_score": (sum(scores) / len(scores)) if scores else None,
            "unparsed": len(items) - len(parsed),
        }

    overall = stats(judgments)
    groups: dict[str, list[Judgment]] = {}
    for j, category in zip(judgments, categories):
        for name in (category or "uncategorized").split(","):
            groups.setdefault(name, []).append(j)
    return {"judge": judge_name, **overall, "per_category": {k: stats(v) for k, v in sorted(groups.items())}}


def evaluate_harm(config: HarmEvalConfig, model=None, tokenizer=None, examples: list[Example] | None = None,
                  judge=None, write: bool = True) -> dict:
    """Generate, judge and (if `write`) save; returns the metrics."""
    from ..generation import make_generator
    from ..models import load_tokenizer
    from ..trigger import SafetyTrigger

    if write and not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if write:
        check_output(config.out, "eval-harm")  # before minutes of generation, not after
    if model is None and not config.model:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    seed_everything(config.seed)
    judge = judge or config.make_judge(config.progress, config.trust_remote_code)  # fail fast, before generating
    rows = harmful_prompts(examples if examples is not None else load_data(config, "evaluation data"),
                           config.n, config.seed)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    if model is None and config.generator == "hf":
        from ..models import default_device, load_model

        model = load_model(config.model, config.dtype, config.trust_remote_code, device=default_device())
    generator = make_generator(config.generator, model=model, tokenizer=tokenizer, model_path=config.model,
                               batch_size=config.batch_size, progress=config.progress,
                               needs_trigger=bool(config.trigger))
    trigger = SafetyTrigger.load(config.trigger, model=model, fmt=config.format,
                                 force=config.force_trigger) if config.trigger else None
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    prompts = [r.prompt for r in rows]
    responses = generator.generate(prompts, fmt, config.max_new_tokens, trigger=trigger)
    judgments = judge.judge(list(zip(prompts, responses)))
    metrics = summarize(judgments, [r.category for r in rows], judge.name)
    metrics["shortened_prompts"] = sum(fmt.encode(p).shortened for p in prompts)
    if metrics["shortened_prompts"]:
        print(f"warning: {metrics['shortened_prompts']} prompt(s) longer than max_length={config.max_length} were "
              "shortened inside the user text", file=sys.stderr, flush=True)
    if write:
        with output_dir(config.out, kind="eval-harm") as work:
            write_jsonl(work / "generations.jsonl", [
                {"prompt": r.prompt, "response": resp, "category": r.category, "judgment": j.as_dict()}
                for r, resp, j in zip(rows, responses, judgments)])
            save_config(config, work)
            atomic_write_json(work / "metrics.json", metrics)
    return metrics
