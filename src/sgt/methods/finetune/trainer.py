"""Supervised fine-tuning: the `sft` baseline defense, the malicious fine-tuning attack, pretraining.

One mechanism, three uses:
  sgt sft    - fine-tune on any prompt/response data; with `refuse_harmful` it is conventional
               safety alignment (harmful prompts answered by the refusal target);
  sgt attack - the adversary: `shots` harmful question->answer pairs, sampled reproducibly;
  toy world  - the toy base's "pretraining" (loss on every token).
Loss is on response tokens only unless `train_on: all`. The plain transformers Trainer does the work:
its loss is the language-model cross-entropy over the labelled tokens.
"""

from __future__ import annotations

from ...data.formats import PromptFormat
from ...data.sources import Example, load_data, sample_shots
from ...errors import UserError
from ...training import apply_lora, encode_examples, finish_stage, save_model, train_rows
from ...utils import output_dir, seed_everything
from .config import AttackConfig, FinetuneConfig


def prepare_sft_examples(examples: list[Example], refuse_harmful: bool, refusal: str) -> list[Example]:
    """Conventional safety alignment data: harmful prompts -> refusal, benign -> their answer."""
    if not refuse_harmful:
        return examples
    out = []
    for e in examples:
        if e.harmful:
            out.append(Example(e.prompt, refusal, True, e.category))
        elif e.response:
            out.append(e)
    return out


def attack_examples(examples: list[Example], shots: int, seed: int, allow_repeat: bool) -> list[Example]:
    """The attacker's sample: `shots` harmful rows that have a response to imitate."""
    harmful = [e for e in examples if e.harmful and e.response]
    if not harmful:
        raise UserError("the attack data has no harmful rows with a response (BeaverTails: is_safe=false)")
    return sample_shots(harmful, shots, seed, allow_repeat)


def finetune(model, tokenizer, examples: list[Example], config: FinetuneConfig, work_dir) -> dict:
    """Train `model` on `examples` (LoRA-wrapped if asked); returns {"model", "metrics", "trainer"}. Does not save."""
    seed_everything(config.seed)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    dataset = encode_examples(examples, fmt, train_on=config.train_on, name=config.data or "data")
    if config.lora:
        model = apply_lora(model, config)
    return train_rows(model, tokenizer, dataset, config, work_dir)


def run_finetune(config: FinetuneConfig, examples: list[Example] | None = None, model=None,
                 tokenizer=None) -> dict:
    """Load what is not given, fine-tune, and write a plain HF checkpoint to `config.out`."""
    from ...models import load_model, load_tokenizer

    if not config.out:
        raise UserError("no output folder given: pass --out DIR")
    if not config.model and model is None:
        raise UserError("no model given: pass --model NAME_OR_PATH")
    if examples is None:
        examples = load_data(config)
    if isinstance(config, AttackConfig):
        examples = attack_examples(examples, config.shots, config.seed, config.allow_repeat)
    else:
        examples = prepare_sft_examples(examples, config.refuse_harmful, config.refusal)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    with output_dir(config.out, keep_partial=config.save_steps > 0, kind="model") as work:
        result = finetune(model, tokenizer, examples, config, work)
        trained = result["trainer"].accelerator.unwrap_model(result["model"])
        finish_stage(work, config, result["metrics"],
                     save=lambda folder: save_model(trained, tokenizer, folder, merge_lora=config.merge_lora))
    return result["metrics"]
