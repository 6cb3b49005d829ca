"""What every generator shares, so that hf and vllm answer the same prompts the same way: the prompt
token ids (our PromptFormat, chat template included), the stop tokens, the trigger's prompt embeddings
and how generated tokens become an answer."""

from __future__ import annotations

import torch

from ..data.formats import Encoded, PromptFormat


def encode_prompts(prompts: list[str], fmt: PromptFormat) -> list[Encoded]:
    """The generation prompts, token for token the prefix of the training rows."""
    return [fmt.encode(p, row=i + 1) for i, p in enumerate(prompts)]


def stop_ids(generation_config, tokenizer) -> list[int]:
    """EOS ids from the model's generation config (chat models end turns with their own token) + the
    tokenizer's."""
    ids = generation_config.eos_token_id if generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def triggered_embeddings(embedding: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                         trigger_pos: torch.Tensor, trigger) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings (B, L + k, H) with the trigger's k vectors spliced in before each row's
    trigger position, and the matching attention mask."""
    embeds = embedding(ids)
    embeds, mask, _ = trigger.to(embeds.device).insert(embeds, mask, trigger_pos)
    return embeds, mask


def decode_answer(tokenizer, tokens) -> str:
    """The answer text of generated token ids (special tokens such as EOS and padding dropped)."""
    ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
