"""Batched greedy generation: left padding, KV cache, rows sorted by length to waste little padding.

With a trigger, the prompt embeddings get the trigger spliced in per row and `generate` runs from
`inputs_embeds` (the same KV-cached decoding, the trigger only in the prompt).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..data.collate import pad_batch
from ..data.formats import PromptFormat
from .registry import GENERATORS
from .shared import decode_answer, encode_prompts, stop_ids, triggered_embeddings


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids of a loaded model's generation config + the tokenizer's."""
    return stop_ids(model.generation_config, tokenizer)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], fmt: PromptFormat, trigger=None, batch_size: int = 32,
             max_new_tokens: int = 64, progress: bool = False, desc: str = "generate") -> list[str]:
    """Greedy completions for `prompts`, in input order."""
    from transformers import GenerationConfig

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = encode_prompts(prompts, fmt)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i].input_ids))
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(model, tokenizer),
                              use_cache=True)
    outputs: list[str | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = pad_batch([encoded[i] for i in chunk], tokenizer.pad_token_id, side="left")
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        if trigger is None:
            new = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:]
        else:
            embeds, mask = triggered_embeddings(model.get_input_embeddings(), ids, mask,
                                                batch["trigger_pos"].to(device), trigger)
            # From inputs_embeds, decoder-only models return only the new tokens.
            new = model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
        for row, tokens in zip(chunk, new):
            outputs[row] = decode_answer(tokenizer, tokens)
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return outputs  # type: ignore[return-value]


@GENERATORS.register
class HFGenerator:
    """Greedy generation with transformers on a loaded model (the default generator)."""

    name = "hf"
    supports_trigger = True

    def __init__(self, model=None, tokenizer=None, model_path: str | None = None, batch_size: int = 32,
                 progress: bool = False, dtype: str = "auto"):
        if model is None or tokenizer is None:
            from ..models import default_device, load_model, load_tokenizer

            tokenizer = tokenizer or load_tokenizer(model_path)
            model = model or load_model(model_path, dtype, device=default_device())
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress

    def generate(self, prompts: list[str], fmt: PromptFormat, max_new_tokens: int, trigger=None,
                 desc: str = "generate") -> list[str]:
        return generate(self.model, self.tokenizer, prompts, fmt, trigger=trigger, batch_size=self.batch_size,
                        max_new_tokens=max_new_tokens, progress=self.progress, desc=desc)
