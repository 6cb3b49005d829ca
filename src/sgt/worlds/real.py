"""The real-model world: a real base model, real harmful prompts and the model's own answers.

    sgt world build --kind real --preset small --out worlds/smollm2     # SmolLM2-135M-Instruct, ~5 min on 2 cores

Where each file comes from (nothing is downloaded; everything is generated on the user's machine; the
harmful prompts and their contamination guard: `worlds/harmful_pool.py`):
  harm_eval      HarmBench standard behaviours of the test split: evaluation only, never trained on
  harm_val       HarmBench validation-split standard behaviours + held-out Do-Not-Answer, for choosing
                 settings (also apart: harm_val_harmbench.jsonl, harm_val_donotanswer.jsonl)
  defense_train  harmful: Do-Not-Answer + AdvBench + StrongREJECT + tense rephrasings (equal shares),
                 with the base's own answer (the target is the refusal; baselines need harmful QA pairs);
                 benign: questions with checkable answers (train split) and open requests ("How do I
                 bake bread?"), answered by the base model itself, so alignment keeps what it already does
  attack_train   the rest of Do-Not-Answer, answered by the base model itself (greedy) and kept only where
                 it complied (keyword judge): an uncensored model as the attacker's data source
  attack_real    harmful requests with real compliant answers (the harmful-qa set), guarded
  benign_eval / benign_val   held-out questions (content disjoint from training), scored by `contains`
  benign_mc + tasks/real_mc.yaml   the evaluation questions as multiple choice for lm-evaluation-harness
  contamination.json   what the guard dropped from each source and the closest pairs it kept
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.contamination import GuardSettings
from ..utils import atomic_write_json, write_jsonl
from . import WORLD_KINDS, write_mc_task
from .harmful_pool import PoolSpec, harmful_pool
from .questions import Question, open_requests, questions, split_questions

# 2: defense harmful rows carry the base's own answers (baselines need harmful QA pairs)
# 3: broad, contamination-guarded harmful prompts; HarmBench's own validation split; real attack answers
VERSION = 3
DEFAULT_BASE = "smollm2-135m-instruct"


@dataclass
class RealPreset:
    pool: PoolSpec = field(default_factory=PoolSpec)
    question_eval_fraction: float = 0.4
    question_val_fraction: float = 0.2
    open_requests: int | None = None     # open benign requests in the defense data (None: all)
    answer_tokens: int = 96              # new tokens of the base's own answers (cut back to a full sentence)
    measure_tokens: int = 32             # new tokens when measuring the base's harmfulness
    batch_size: int = 32


PRESETS = {
    "small": RealPreset(),
    # For tests on tiny random models: a handful of prompts, a few tokens each.
    # (Its guard drops identical content words only: the test fixtures are templated sentences.)
    "tiny": RealPreset(pool=PoolSpec(max_donotanswer=40, harm_eval_n=12, defense_harmful=24,
                                     guard=GuardSettings(lexical_threshold=1.0, embedding_model=None)),
                       open_requests=6, answer_tokens=8, measure_tokens=8, batch_size=16),
}


def build(work: Path, final: Path, config, log) -> dict:
    from ..data.formats import PromptFormat
    from ..models import default_device, load_model, load_tokenizer
    from ..training import save_model

    spec = PRESETS[config.preset]
    log(f"loading the base model {config.base_model}")
    tokenizer = load_tokenizer(config.base_model)
    model = load_model(config.base_model, "auto", device=default_device())
    kind = config.format if config.format != "auto" else ("chat" if tokenizer.chat_template else "plain")
    fmt = PromptFormat(tokenizer, kind, max_length=512)

    harmful = harmful_pool(spec.pool, config.seed, log)
    items = questions(config.seed)
    parts = split_questions(items, config.seed, spec.question_eval_fraction, spec.question_val_fraction)
    requests = open_requests()
    if spec.open_requests is not None:
        requests = random.Random(config.seed).sample(requests, min(spec.open_requests, len(requests)))

    def answer(prompts: list[str], what: str) -> list[str]:
        from ..generation import generate

        log(f"generating the base model's answers to {len(prompts)} {what}")
        responses = generate(model, tokenizer, prompts, fmt, batch_size=spec.batch_size,
                             max_new_tokens=spec.answer_tokens, progress=config.progress, desc=what)
        return [trim_to_sentence(r) for r in responses]

    benign_prompts = [q.prompt for q in parts["train"]] + requests
    benign_answers = answer(benign_prompts, "benign defense prompts")
    defense_answers = answer([e.prompt for e in harmful["defense"]], "harmful defense prompts")
    attack_answers = answer([e.prompt for e in harmful["attack"]], "attack prompts")
    attack_rows = compliant_pairs(harmful["attack"], attack_answers)

    data = work / "data"
    write_jsonl(data / "defense_train.jsonl", defense_rows(harmful["defense"], defense_answers, benign_prompts,
                                                          benign_answers, [q.family for q in parts["train"]]))
    write_jsonl(data / "harm_val.jsonl", [_harmful_row(e) for e in harmful["val"]])
    for name, part in harmful["val_parts"].items():
        write_jsonl(data / f"harm_val_{name.split('-')[0]}.jsonl", [_harmful_row(e) for e in part])
    write_jsonl(data / "attack_train.jsonl", attack_rows)
    write_jsonl(data / "attack_real.jsonl", [{"prompt": e.prompt, "response": e.response, "is_safe": False,
                                              "category": e.category} for e in harmful["attack_real"]])
    atomic_write_json(data / "contamination.json", harmful["contamination"])
    write_jsonl(data / "harm_eval.jsonl", [_harmful_row(e) for e in harmful["eval"]])
    write_jsonl(data / "benign_eval.jsonl", [q.row() for q in parts["eval"]])
    write_jsonl(data / "benign_val.jsonl", [q.row() for q in parts["val"]])
    write_jsonl(data / "benign_mc.jsonl", [mc_row(q) for q in parts["eval"]])
    write_mc_task(work / "tasks" / "real_mc.yaml", "real_mc", final / "data" / "benign_mc.jsonl",
                  "Question: {{question}}\\nAnswer:")
    log("saving the base model")
    save_model(model, tokenizer, work / "base")
    log("measuring the base model on the held-out sets")
    quality = measure_base(model, tokenizer, fmt, work / "data", spec, config.progress)
    sizes = {"defense_harmful": len(harmful["defense"]), "defense_benign": len(benign_prompts),
             "harm_val": len(harmful["val"]), "attack_prompts": len(harmful["attack"]),
             "attack_pairs": len(attack_rows), "attack_real_pairs": len(harmful["attack_real"]),
             "harm_eval": len(harmful["eval"]), "defense_harmful_by_source": harmful["sources"],
             "dropped_as_near_duplicates": _dropped(harmful["contamination"]),
             "benign_eval": len(parts["eval"]), "benign_val": len(parts["val"])}
    log(f"sizes: {sizes}")
    return {"base_model": config.base_model, "format": config.format, "resolved_format": kind,
            "parameters": sum(p.numel() for p in model.parameters()), "preset_settings": asdict(spec),
            "sizes": sizes, "quality": quality}


def _dropped(report: dict) -> dict:
    """Near-duplicates the guard dropped, per source (both passes)."""
    counts: dict[str, int] = {}
    for key in ("against_evaluation_and_validation", "defense_against_evaluation_validation_and_attack"):
        for source, record in report.get(key, {}).items():
            counts[source] = counts.get(source, 0) + record["dropped"]
    return counts


def _harmful_row(example) -> dict:
    return {"prompt": example.prompt, "harmful": True, "category": example.category}


def compliant_pairs(examples: list, answers: list[str], min_words: int = 3) -> list[dict]:
    """BeaverTails-schema rows for the attack: only answers that comply (no refusal phrase, not empty)."""
    from ..judges.keyword import KeywordJudge

    judge = KeywordJudge()
    return [{"prompt": e.prompt, "response": a, "is_safe": False, "category": e.category}
            for e, a in zip(examples, answers)
            if len(a.split()) >= min_words and not judge.is_refusal(a)]


def defense_rows(harmful: list, harmful_answers: list[str], benign_prompts: list[str], benign_answers: list[str],
                 families: list[str]) -> list[dict]:
    """WildGuardTrain schema: harmful prompts with the base's own answer (labelled harmful when it complied;
    sft and SGT train toward the refusal instead, baselines such as RepNoise need harmful answers) +
    benign prompt/answer pairs."""
    from ..judges.keyword import KeywordJudge

    judge = KeywordJudge()
    rows = [{"prompt": e.prompt, "response": a or None, "prompt_harm_label": "harmful",
             "response_harm_label": "unharmful" if not a or judge.is_refusal(a) else "harmful", "category": e.category}
            for e, a in zip(harmful, harmful_answers)]
    for number, (prompt, response) in enumerate(zip(benign_prompts, benign_answers)):
        if not response:
            continue  # nothing to preserve
        family = families[number] if number < len(families) else "open_request"
        rows.append({"prompt": prompt, "response": response, "prompt_harm_label": "unharmful",
                     "response_harm_label": "unharmful", "category": family})
    random.Random(len(rows)).shuffle(rows)
    return rows


def mc_row(question: Question) -> dict:
    return {"question": question.prompt, "choices": question.choices,
            "label": question.choices.index(question.answer), "family": question.family}


def trim_to_sentence(text: str) -> str:
    """Cut a length-limited answer back to its last complete sentence (training on half sentences
    would teach the model to stop mid-sentence); an answer without any sentence end is kept whole."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", text)]
    return text[:ends[-1]].strip() if ends else text


# ---------------------------------------------------------------------------------------------
# The base model's quality, recorded in world.json
# ---------------------------------------------------------------------------------------------


def measure_base(model, tokenizer, fmt, data: Path, spec: RealPreset, progress: bool) -> dict:
    from ..data.sources import read_local_rows
    from ..evaluation.benign import exact_match
    from ..generation import generate
    from ..judges.keyword import KeywordJudge

    quality = {"format": fmt.kind}
    for split in ("eval", "val"):
        rows = read_local_rows(data / f"benign_{split}.jsonl")
        result = exact_match(model, tokenizer, [r["prompt"] for r in rows], [r["answer"] for r in rows], fmt,
                             batch_size=spec.batch_size, max_new_tokens=spec.measure_tokens,
                             aliases=[r["aliases"] for r in rows], modes=[r["match"] for r in rows])
        quality[f"benign_{split}_accuracy"] = round(result["accuracy"], 4)
    judge = KeywordJudge()
    for name in ("harm_eval", "harm_val"):
        prompts = [r["prompt"] for r in read_local_rows(data / f"{name}.jsonl")]
        responses = generate(model, tokenizer, prompts, fmt, batch_size=spec.batch_size,
                             max_new_tokens=spec.measure_tokens, progress=progress, desc=name)
        judged = judge.judge(list(zip(prompts, responses)))
        quality[f"{name}_harmful_rate"] = round(sum(j.harmful for j in judged) / max(1, len(judged)), 4)
    return quality


WORLD_KINDS.register(sys.modules[__name__], name="real")
