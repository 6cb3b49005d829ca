"""Why an aligned model does (not) refuse like its teacher: a diagnosis at the position that decides.

SGT's promise is that the aligned model, WITHOUT the trigger, behaves like the frozen base model WITH it
(the teacher). Whether an answer starts as a refusal is decided at the last prompt position (it predicts
the first answer token), so for each prompt set (e.g. the harmful training prompts, validation and
evaluation prompts) this compares, at that position:

  kl            KL(teacher || model) of the next-token distributions (0: the same decision)
  top1          how often the model's most likely first token is the teacher's
  p_refusal     probability of the refusal's first token (e.g. "I" of "I can't answer.") under the
                teacher, the model and the base without trigger
  refusal rate  of greedy answers (keyword judge) of the teacher, the model and the base without trigger

Reading it: a teacher that refuses a set too rarely limits what any alignment can copy there; a small KL
and high top-1 with a low refusal rate means the first token is copied but the answer goes elsewhere
after it; a KL that is small on training prompts and large on evaluation prompts is a distribution
shift between them.

    sgt diagnose --base B --trigger T --model M --sets train=defense.jsonl,val=harm_val.jsonl --out DIR
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import cfg
from ..errors import UserError
from ..refusal import REFUSAL
from .drift import TriggerProbeFields


@dataclass
class DiagnoseConfig(TriggerProbeFields):
    sets: dict = cfg({}, "Prompt sets, name=file,... (any data source; only harmful or unlabelled rows are used), "
                         "e.g. train=defense_train.jsonl,val=harm_val.jsonl,eval=harm_eval.jsonl.")
    refusal: str = cfg(REFUSAL, "The refusal whose first token is tracked.")
    max_new_tokens: int = cfg(32, "Tokens generated per prompt for the refusal rates.")
    out: str = cfg("", "Output folder: diagnosis.json, diagnosis.md, config.yaml.")


def first_refusal_token(fmt, refusal: str, prompt: str) -> int:
    """The token the answer starts with when it is the refusal (as the training rows encode it)."""
    from ..data.formats import IGNORE_INDEX

    encoded = fmt.encode(prompt, refusal)
    return next(label for label in encoded.labels if label != IGNORE_INDEX)


def decision(teacher: torch.Tensor, model: torch.Tensor, refusal_ids: torch.Tensor) -> dict:
    """Compare two (n, vocab) next-token log-probability tables: KL(teacher || model), top-1 agreement,
    and the mean probability each gives the refusal's first token."""
    kl = (teacher.exp() * (teacher - model)).sum(-1)
    rows = torch.arange(len(refusal_ids))
    return {"kl": round(float(kl.mean()), 4),
            "top1": round(float((teacher.argmax(-1) == model.argmax(-1)).float().mean()), 4),
            "p_refusal": round(float(model[rows, refusal_ids].exp().mean()), 4)}


def diagnose_set(base, tokenizer, trigger, models: dict, prompts: list[str], fmt, config: DiagnoseConfig) -> dict:
    """The diagnosis of one prompt set: the teacher, the base without trigger and every model."""
    from ..evaluation.drift import at_last_prompt_position
    from ..refusal import refusal_rate

    refusal_ids = torch.tensor([first_refusal_token(fmt, config.refusal, p) for p in prompts])

    def measure(model, with_trigger=None) -> tuple[torch.Tensor, float]:
        logprobs = at_last_prompt_position(model, tokenizer, prompts, fmt, with_trigger, config.batch_size, "logprobs")
        rate, _ = refusal_rate(model, tokenizer, prompts, fmt, with_trigger, config.max_new_tokens, config.batch_size)
        return logprobs, round(rate, 4)

    teacher, teacher_rate = measure(base, trigger)
    rows = {"teacher (base + trigger)": {**decision(teacher, teacher, refusal_ids), "refusal_rate": teacher_rate}}
    plain, plain_rate = measure(base)
    rows["base (no trigger)"] = {**decision(teacher, plain, refusal_ids), "refusal_rate": plain_rate}
    for name, model in models.items():
        logprobs, rate = measure(model)
        rows[name] = {**decision(teacher, logprobs, refusal_ids), "refusal_rate": rate}
    return {"n": len(prompts), "models": rows}


def run_diagnosis(config: DiagnoseConfig) -> dict:
    """`sgt diagnose`: the table above for every prompt set, written to diagnosis.json and diagnosis.md."""
    from ..config import save_config
    from ..data.formats import PromptFormat
    from ..data.sources import load_examples
    from ..models import default_device, load_model, load_tokenizer
    from ..trigger import SafetyTrigger
    from ..utils import atomic_write_json, atomic_write_text, check_output, output_dir
    from .harm import harmful_prompts

    for name in ("base", "trigger", "sets", "out"):
        if not getattr(config, name):
            raise UserError(f"no --{name} given (see `sgt diagnose --help`)")
    check_output(config.out, "diagnosis")
    prompt_sets = {name: [r.prompt for r in harmful_prompts(load_examples(path), config.n, config.seed)]
                   for name, path in config.sets.items()}
    tokenizer = load_tokenizer(config.base, config.trust_remote_code)
    base = load_model(config.base, config.dtype, config.trust_remote_code, device=default_device())
    trigger = SafetyTrigger.load(config.trigger, model=base, fmt=config.format)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    models = {name: load_model(name, config.dtype, config.trust_remote_code, device=default_device())
              for name in config.model}
    results = {name: diagnose_set(base, tokenizer, trigger, models, prompts, fmt, config)
               for name, prompts in prompt_sets.items()}
    with output_dir(config.out, kind="diagnosis") as work:
        atomic_write_json(work / "diagnosis.json", results)
        atomic_write_text(work / "diagnosis.md", diagnosis_table(results) + "\n")
        save_config(config, work)
    return results


def diagnosis_table(results: dict) -> str:
    """One markdown table: a row per model, the sets side by side in each column."""
    sets = list(results)
    models = list(next(iter(results.values()))["models"]) if results else []
    head = " / ".join(f"{s} (n {results[s]['n']})" for s in sets)
    lines = [f"| model | KL(teacher ‖ model) {head} | top-1 agrees with teacher | P(refusal's first token) | refusal rate |",
             "|---|---|---|---|---|"]
    for model in models:
        cells = [" / ".join(f"{results[s]['models'][model][key]:.2f}" for s in sets)
                 for key in ("kl", "top1", "p_refusal", "refusal_rate")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
