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

from pathlib import Path

from transformers import TrainerCallback

from ...data.formats import PromptFormat
from ...data.sources import Example, load_data, sample_mix, sample_shots
from ...errors import UserError
from ...sharding import fsdp_launch
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


def attack_examples(examples: list[Example], shots: int, seed: int, allow_repeat: bool,
                    harmful_fraction: float = 1.0, benign: list[Example] | None = None) -> list[Example]:
    """The attacker's sample: `shots` rows, a `harmful_fraction` of them harmful pairs with a response to
    imitate, the rest benign pairs from `benign` (shuffled together, reproducibly)."""
    import random

    n_harmful = round(shots * harmful_fraction)
    rows = []
    if n_harmful:
        harmful = [e for e in examples if e.harmful and e.response]
        if not harmful:
            raise UserError("the attack data has no harmful rows with a response (BeaverTails: is_safe=false)")
        rows += sample_shots(harmful, n_harmful, seed, allow_repeat)
    if shots - n_harmful:
        clean = [e for e in benign or [] if e.harmful is False and e.response]
        if not clean:
            raise UserError("benign_data has no benign rows with a response (labelled unharmful / safe)")
        rows += sample_shots(clean, shots - n_harmful, seed + 1, allow_repeat, name="benign_data")
    random.Random(seed).shuffle(rows)
    return rows


def finetune(model, tokenizer, examples: list[Example], config: FinetuneConfig, work_dir) -> dict:
    """Train `model` on `examples` (LoRA-wrapped if asked); returns {"model", "metrics", "trainer"}. Does not
    save the final model (intermediate ones, with `save_at_examples`, go to WORK/at-N)."""
    seed_everything(config.seed)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    dataset = encode_examples(examples, fmt, train_on=config.train_on, name=config.data or "data")
    if config.lora:
        model = apply_lora(model, config)
    if getattr(config, "save_at_examples", None) and fsdp_launch():
        raise UserError("save_at_examples cannot save from FSDP shards mid-training; launch this attack "
                        "with configs/accelerate/ddp.yaml or drop save_at_examples")
    callbacks = [SaveAtExamples(sorted(set(config.save_at_examples)), len(dataset), tokenizer, work_dir)] \
        if getattr(config, "save_at_examples", None) else []
    return train_rows(model, tokenizer, dataset, config, work_dir, callbacks=callbacks)


class SaveAtExamples(TrainerCallback):
    """Saves the model once `n` training examples have been seen, for each n (plain checkpoints; LoRA
    adapters are saved merged into a copy, the training model is left as it is)."""

    def __init__(self, counts: list[int], rows: int, tokenizer, work_dir):
        self.pending, self.rows, self.tokenizer, self.work_dir = list(counts), rows, tokenizer, Path(work_dir)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        from ...utils import is_main_process

        seen = round((state.epoch or 0) * self.rows)  # fractional epochs done x rows per epoch
        while self.pending and seen >= self.pending[0]:
            count = self.pending.pop(0)
            if is_main_process():
                save_copy(model, self.tokenizer, self.work_dir / f"at-{count}")
        return control


def save_copy(model, tokenizer, folder: Path) -> None:
    """A plain checkpoint of `model` as it is now, without changing it (LoRA merged into a copy)."""
    import copy

    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    save_model(model, tokenizer, folder)


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
        from ...data.sources import load_examples

        benign = load_examples(config.benign_data) if config.harmful_fraction < 1 else None
        examples = attack_examples(examples, config.shots, config.seed, config.allow_repeat,
                                   config.harmful_fraction, benign)
    else:
        if config.rows is not None:
            examples = sample_mix(examples, config.rows, config.harm_ratio, config.seed, name=config.data or "data")
        examples = prepare_sft_examples(examples, config.refuse_harmful, config.refusal)
    tokenizer = tokenizer or load_tokenizer(config.model, config.trust_remote_code)
    model = model or load_model(config.model, config.dtype, config.trust_remote_code)
    with output_dir(config.out, keep_partial=config.save_steps > 0, kind="model") as work:
        result = finetune(model, tokenizer, examples, config, work)
        trained = result["trainer"].accelerator.unwrap_model(result["model"])
        finish_stage(work, config, result["metrics"],
                     save=lambda folder: save_model(trained, tokenizer, folder, merge_lora=config.merge_lora))
    return result["metrics"]
