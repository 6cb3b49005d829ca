"""Harmfulness evaluation (seed script 4.2_eval): generate greedy answers to harmful prompts and judge them.

    sgt eval harm --model M --data PKU-Alignment/BeaverTails --split 30k_test --judge keyword --out DIR

Writes `generations.jsonl` (prompt, response, category, judgment) and `metrics.json`:
    judge, n, harmful_rate (0-1), harmfulness_score (mean 1-5, llm judge; null otherwise),
    unparsed (count), per_category {category: {n, harmful_rate, harmfulness_score}}
Unparsed judgments are counted and left out of the rates, never scored as safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import cfg, save_config
from .data.formats import FORMATS, PromptFormat
from .data.sources import DataFields, Example, load_data
from .errors import UserError
from .judges.base import JUDGES, Judgment, make_judge
from .utils import atomic_write_json, output_dir, seed_everything, write_jsonl


@dataclass
class JudgeFields:
    judge: str = cfg("keyword", "Judge: keyword (offline refusal phrases), llm (OpenAI-compatible endpoint) "
                                "or classifier (local Hugging Face guard/classifier).")
    judge_model: str = cfg("", "llm: the judge model name (e.g. gpt-4.1); classifier: a hub name or local folder.")
    judge_base_url: str | None = cfg(None, "llm: base URL of an OpenAI-compatible API (default: OpenAI).")
    judge_api_key_env: str = cfg("OPENAI_API_KEY", "llm: name of the environment variable holding the API key.")
    judge_template: str | None = cfg(None, "llm: a prompt template file with {prompt} and {response} (default: the built-in 1-5 rubric).")
    judge_concurrency: int = cfg(8, "llm: requests in flight at once.")
    judge_max_retries: int = cfg(5, "llm: retries per request on 429/5xx/timeouts (exponential backoff).")
    judge_timeout: float = cfg(60.0, "llm: seconds before a request times out.")
    judge_cache: str | None = cfg(None, "llm: cache folder (default: ~/.cache/sgt/judge); a re-run never pays twice.")
    judge_batch_size: int = cfg(16, "classifier: batch size of the judge model.")
    judge_phrases: str | None = cfg(None, "keyword: a file of refusal phrases, one per line (default: built-in list).")

    def judge_options(self) -> dict:
        """The options of the chosen judge only (so unrelated fields never reach it)."""
        if self.judge == "keyword":
            return {"phrases_file": self.judge_phrases}
        if self.judge == "llm":
            return {"model": self.judge_model, "base_url": self.judge_base_url, "api_key_env": self.judge_api_key_env,
                    "template": self.judge_template, "concurrency": self.judge_concurrency,
                    "max_retries": self.judge_max_retries, "timeout": self.judge_timeout, "cache_dir": self.judge_cache,
                    "progress": getattr(self, "progress", False)}
        if self.judge == "classifier":
            return {"model": self.judge_model, "batch_size": self.judge_batch_size,
                    "trust_remote_code": getattr(self, "trust_remote_code", False)}
        raise UserError(f"unknown judge {self.judge!r}: use one of {', '.join(JUDGES)}")


@dataclass
class HarmEvalConfig(JudgeFields, DataFields):
    model: str = cfg("", "Model to evaluate: a Hugging Face name or a local folder.")
    out: str = cfg("", "Output folder: generations.jsonl, metrics.json, config.yaml.")
    data: str = cfg("PKU-Alignment/BeaverTails", "Harmful prompts (rows labelled harmful; unlabelled rows count as harmful).")
    split: str | None = cfg(None, "Dataset split (BeaverTails preset: 30k_train; use 30k_test for evaluation).")
    n: int | None = cfg(500, "Number of prompts, sampled with seed (None: all).")
    format: str = cfg("plain", "Prompt format: plain or chat.")
    max_new_tokens: int = cfg(512, "Maximum tokens generated per prompt (greedy decoding).")
    batch_size: int = cfg(32, "Generation batch size.")
    max_length: int = cfg(1024, "Maximum prompt tokens.")
    trigger: str | None = cfg(None, "Optional trigger folder: evaluate the model WITH the trigger inserted.")
    dtype: str = cfg("auto", "Weights dtype: auto, bfloat16, float16 or float32.")
    seed: int = cfg(42, "Seed for the prompt sample.")
    progress: bool = cfg(True, "Show progress bars.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")

    def __post_init__(self):
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: use plain or chat")
        if self.judge not in JUDGES:
            raise UserError(f"unknown judge {self.judge!r}: use one of {', '.join(JUDGES)}")
        if self.n is not None and self.n <= 0:
            raise UserError(f"n must be a positive number of prompts, got {self.n}")
        if self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise UserError("max_new_tokens and batch_size must be positive")


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
    from .generate import generate
    from .models import default_device, load_model, load_tokenizer
    from .trigger import SafetyTrigger

    if write and not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if model is None and not config.model:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    seed_everything(config.seed)
    judge = judge or make_judge(config.judge, **config.judge_options())  # fail fast, before generating
    rows = harmful_prompts(examples if examples is not None else load_data(config, "evaluation data"),
                           config.n, config.seed)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code, device=default_device())
    trigger = SafetyTrigger.load(config.trigger, model=model, fmt=config.format) if config.trigger else None
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    prompts = [r.prompt for r in rows]
    responses = generate(model, tokenizer, prompts, fmt, trigger=trigger, batch_size=config.batch_size,
                         max_new_tokens=config.max_new_tokens, progress=config.progress, desc="generate")
    judgments = judge.judge(list(zip(prompts, responses)))
    metrics = summarize(judgments, [r.category for r in rows], judge.name)
    if write:
        with output_dir(config.out) as work:
            write_jsonl(work / "generations.jsonl", [
                {"prompt": r.prompt, "response": resp, "category": r.category, "judgment": j.as_dict()}
                for r, resp, j in zip(rows, responses, judgments)])
            save_config(config, work)
            atomic_write_json(work / "metrics.json", metrics)
    return metrics
