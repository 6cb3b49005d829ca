"""SafetyTrigger: per-row insertion, both padding sides and formats, batch invariance, save/load."""

from __future__ import annotations

import pytest
import torch

from sgt.data.collate import pad_batch
from sgt.data.formats import IGNORE_INDEX, PromptFormat
from sgt.errors import UserError
from sgt.trigger import SafetyTrigger, insert_trigger, remove_trigger_positions

PROMPTS = ["Which is bigger: 3 or 4?", "How do I bake bread today with my friend?", "Hi"]


def test_insert_places_vectors_per_row_and_masks_them():
    embeds = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    vectors = torch.full((2, 3), -1.0)
    out, out_mask, out_labels = insert_trigger(embeds, mask, vectors, torch.tensor([1, 3]), labels)
    assert out.shape == (2, 6, 3)
    # row 0: trigger at positions 1-2, row 1: at positions 3-4
    assert (out[0, 1:3] == -1).all() and (out[1, 3:5] == -1).all()
    assert torch.equal(out[0, [0, 3, 4, 5]], embeds[0]) and torch.equal(out[1, [0, 1, 2, 5]], embeds[1])
    assert out_mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert out_labels.tolist() == [[-100, -100, -100, 5, 6, -100], [-100, -100, 7, -100, -100, 8]]
    # inverse: removing the trigger positions gives back the original sequence
    assert torch.equal(remove_trigger_positions(out, torch.tensor([1, 3]), 2), embeds)


def test_gradients_reach_the_trigger_only():
    trigger = SafetyTrigger(3, length=2, tied=True)
    embeds = torch.randn(1, 4, 3)
    out, _, _ = trigger.insert(embeds, torch.ones(1, 4, dtype=torch.long), torch.tensor([2]))
    out.sum().backward()
    assert trigger.vectors.grad is not None and trigger.vectors.grad.abs().sum() > 0
    assert trigger.embeddings().shape == (2, 3)


def _logits_with_trigger(model, tokenizer, fmt, prompts, trigger, side):
    rows = [fmt.encode(p, "I can't answer.") for p in prompts]
    batch = pad_batch(rows, tokenizer.pad_token_id, side)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    embeds, mask, labels = trigger.insert(embeds, batch["attention_mask"], batch["trigger_pos"], batch["labels"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # count real tokens only, so left padding does not shift
    logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    # keep only real (non-pad) positions of each row
    return [logits[i][mask[i].bool()] for i in range(len(prompts))], labels, mask


@pytest.mark.parametrize("kind", ["plain", "chat"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_invariance(tiny_model, toy_tokenizer, kind, side):
    """A row gives the same logits alone and inside a padded batch (per-row trigger positions)."""
    torch.manual_seed(0)
    fmt = PromptFormat(toy_tokenizer, kind)
    trigger = SafetyTrigger(tiny_model.config.hidden_size, length=3, tied=False, init_std=1.0)
    with torch.no_grad():
        batched, labels, mask = _logits_with_trigger(tiny_model, toy_tokenizer, fmt, PROMPTS, trigger, side)
        for i, prompt in enumerate(PROMPTS):
            alone, _, _ = _logits_with_trigger(tiny_model, toy_tokenizer, fmt, [prompt], trigger, side)
            torch.testing.assert_close(batched[i], alone[0], atol=1e-4, rtol=1e-4)
    # response labels survive insertion; trigger positions are never labelled
    assert (labels[mask == 0] == IGNORE_INDEX).all()


@pytest.mark.slow
def test_generation_with_trigger_is_batch_invariant(tiny_model, toy_tokenizer):
    from sgt.generation import generate

    torch.manual_seed(1)
    fmt = PromptFormat(toy_tokenizer, "plain")
    trigger = SafetyTrigger(tiny_model.config.hidden_size, length=2, tied=False, init_std=1.0)
    together = generate(tiny_model, toy_tokenizer, PROMPTS, fmt, trigger=trigger, batch_size=8, max_new_tokens=8)
    alone = [generate(tiny_model, toy_tokenizer, [p], fmt, trigger=trigger, max_new_tokens=8)[0] for p in PROMPTS]
    assert together == alone
    without = generate(tiny_model, toy_tokenizer, PROMPTS, fmt, batch_size=8, max_new_tokens=8)
    assert without == [generate(tiny_model, toy_tokenizer, [p], fmt, max_new_tokens=8)[0] for p in PROMPTS]


def test_save_load_round_trip_and_mismatch_errors(tmp_path, tiny_model):
    trigger = SafetyTrigger(tiny_model.config.hidden_size, length=4, tied=False,
                            metadata={"model": "tiny", "format": "plain", "anchor": "User:"})
    trigger.save(tmp_path / "t")
    loaded = SafetyTrigger.load(tmp_path / "t", model=tiny_model, fmt="plain")
    assert torch.equal(loaded.vectors, trigger.vectors) and loaded.length == 4 and not loaded.tied
    assert loaded.metadata["anchor"] == "User:"
    assert (tmp_path / "t" / "trigger.json").is_file()
    with pytest.raises(UserError, match="chat"):
        SafetyTrigger.load(tmp_path / "t", fmt="chat")
    other = SafetyTrigger(16, length=1)
    other.save(tmp_path / "o")
    with pytest.raises(UserError, match="hidden size 16"):
        SafetyTrigger.load(tmp_path / "o", model=tiny_model)
    with pytest.raises(UserError, match="trigger not found"):
        SafetyTrigger.load(tmp_path / "missing")
