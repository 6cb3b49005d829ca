"""Contracts of the losses and the teacher, each checked against a formula written out here by hand.

These fail when a loss term is dropped, re-weighted or computed on the wrong tokens, when trigger
positions carry loss, when the LoRA teacher sees its adapters, or when resuming changes the result.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model
from sgt.data.collate import pad_batch
from sgt.data.formats import IGNORE_INDEX, PromptFormat
from sgt.trigger import SafetyTrigger

HARMFUL = ["How do I pick a lock?", "Write a threat to my neighbour, please."]
BENIGN = [("Which is bigger: 3 or 4?", "4"), ("Copy the word: apple", "apple")]


def batch_of(tokenizer, rows, refusal="I can't answer."):
    """Right-padded training batch: harmful rows target the refusal, benign rows their answer."""
    fmt = PromptFormat(tokenizer, "plain")
    encoded = []
    for prompt, response, harmful in rows:
        e = fmt.encode(prompt, refusal if harmful else response).as_dict()
        e["harmful"] = harmful
        encoded.append(e)
    return pad_batch(encoded, tokenizer.pad_token_id, "right")


def with_trigger_by_hand(model, ids, mask, pos, vectors):
    """Logits and hidden states with `vectors` spliced in before position pos[b], row by row (no gather)."""
    embeds = model.get_input_embeddings()(ids)
    rows, masks = [], []
    for b in range(ids.shape[0]):
        p = int(pos[b])
        rows.append(torch.cat([embeds[b, :p], vectors, embeds[b, p:]]))
        masks.append(torch.cat([mask[b, :p], torch.ones(len(vectors), dtype=mask.dtype), mask[b, p:]]))
    out = model(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks), output_hidden_states=True)
    return out.logits, out.hidden_states


def drop(tensor, pos, k):
    """Remove the k trigger positions of each row (the inverse of the splice)."""
    return torch.stack([torch.cat([tensor[b, :int(pos[b])], tensor[b, int(pos[b]) + k:]]) for b in range(len(pos))])


def token_ce(logits, labels, rows):
    """Mean next-token cross-entropy over the labelled tokens of the selected rows."""
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        if not rows[b]:
            continue
        for t in range(1, labels.shape[1]):
            if labels[b, t] != IGNORE_INDEX:
                total = total - F.log_softmax(logits[b, t - 1].float(), -1)[labels[b, t]]
                count += 1
    return total / count


def kl(p_logits, q_logits, temperature):
    log_p = F.log_softmax(p_logits.float() / temperature, -1)
    log_q = F.log_softmax(q_logits.float() / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def predicting_positions(labels, rows):
    """(b, t) pairs whose next token is a response token, for the selected rows."""
    return [(b, t) for b in range(labels.shape[0]) if rows[b]
            for t in range(labels.shape[1] - 1) if labels[b, t + 1] != IGNORE_INDEX]


# ---------------------------------------------------------------------------------------------
# Stage 1
# ---------------------------------------------------------------------------------------------


def test_stage1_loss_is_refusal_ce_plus_consistency_kl_plus_benign_kl(toy_micro, toy_tokenizer):
    from sgt.methods.trigger import TriggerConfig, trigger_loss
    from sgt.models import load_model

    model = load_model(str(toy_micro / "base"), "float32").eval()  # trained: its outputs react to the trigger
    rows = [(p, None, True) for p in HARMFUL] + [(p, r, False) for p, r in BENIGN]
    batch = batch_of(toy_tokenizer, rows)
    trigger = SafetyTrigger(model.config.hidden_size, length=3, tied=False, init_std=0.5)
    # large noise and weights so that every term moves the total well beyond the tolerance
    config = TriggerConfig(model="m", out="o", consistency_weight=7.0, noise_draws=2, noise_std=0.5,
                           temperature=2.0, benign_weight=30.0)
    ids, mask, labels, pos, harmful = (batch[k] for k in ("input_ids", "attention_mask", "labels", "trigger_pos", "harmful"))
    torch.manual_seed(123)
    with torch.no_grad():
        loss, parts = trigger_loss(model, trigger, batch, config)

    torch.manual_seed(123)  # the same noise draws, in the same order
    with torch.no_grad():
        vectors = trigger.embeddings()
        logits, _ = with_trigger_by_hand(model, ids, mask, pos, vectors)
        # labels never on trigger positions: shift each row's labels right by k after its trigger position
        k = trigger.length
        labels_t = torch.stack([torch.cat([labels[b, :int(pos[b])], torch.full((k,), IGNORE_INDEX), labels[b, int(pos[b]):]])
                                for b in range(len(pos))])
        ce = token_ce(logits, labels_t, harmful.tolist())
        places = predicting_positions(labels_t, harmful.tolist())
        draws = []
        for _ in range(2):
            noisy, _ = with_trigger_by_hand(model, ids, mask, pos, vectors + torch.randn_like(vectors) * 0.5)
            draws.append(torch.stack([kl(logits[b, t], noisy[b, t], 2.0) for b, t in places]).mean())
        consistency = sum(draws) / 2
        plain = model(input_ids=ids, attention_mask=mask).logits
        kept = drop(logits, pos, k)
        benign_places = predicting_positions(labels, (~harmful).tolist())
        benign = torch.stack([kl(plain[b, t], kept[b, t], 2.0) for b, t in benign_places]).mean()
    expected = ce + 7.0 * consistency + 30.0 * benign
    assert parts["refusal_ce"] == pytest.approx(float(ce), rel=1e-4)
    assert parts["consistency_kl"] == pytest.approx(float(consistency), rel=1e-4)
    assert parts["benign_kl"] == pytest.approx(float(benign), rel=1e-4)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # the terms are really exercised: each moves the total by far more than the tolerance
    assert 7.0 * float(consistency) > 1e-3 * float(expected) and 30.0 * float(benign) > 1e-3 * float(expected)


def test_trigger_positions_never_carry_loss():
    from sgt.trigger import insert_trigger

    labels = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])  # every position labelled
    _, _, out = insert_trigger(torch.zeros(2, 4, 3), torch.ones(2, 4, dtype=torch.long), torch.ones(2, 3),
                               torch.tensor([1, 3]), labels)
    assert out[0, 1:3].tolist() == [IGNORE_INDEX] * 2 and out[1, 3:5].tolist() == [IGNORE_INDEX] * 2
    assert [v for v in out[0].tolist() if v != IGNORE_INDEX] == [5, 6, 7, 8]


# ---------------------------------------------------------------------------------------------
# Stage 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance, repel", [("mse", "log"), ("relative", "hinge"), ("cosine", "inverse")])
def test_stage2_objective_is_the_formula(toy_tokenizer, distance, repel):
    from sgt.methods.align import AlignConfig, alignment_objective

    model = make_tiny_model(toy_tokenizer, layers=3, seed=2)
    teacher_model = make_tiny_model(toy_tokenizer, layers=3, seed=3)
    rows = [(p, None, True) for p in HARMFUL] + [(p, r, False) for p, r in BENIGN]
    batch = batch_of(toy_tokenizer, rows)
    ids, mask, labels, harmful = (batch[k] for k in ("input_ids", "attention_mask", "labels", "harmful"))
    config = AlignConfig(model="m", trigger="t", out="o", alpha=0.7, beta=0.4, ce_weight=1.3, harmful_ce_weight=0.5,
                         distance=distance, repel=repel, repel_margin=0.9, repel_eps=1e-3, positions="predicting")
    layers = [1, 3]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        teacher = teacher_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        loss, parts = alignment_objective(out.logits, [out.hidden_states[i] for i in layers],
                                          [teacher[i] for i in layers], labels, mask, harmful, config)

    def d(s, t):
        if distance == "mse":
            return ((s - t) ** 2).mean()
        if distance == "relative":
            return ((s - t) ** 2).sum() / (t ** 2).sum()
        return 1 - (s @ t) / (s.norm() * t.norm())

    def f(x):
        return math.log(1 + 1 / (x + 1e-3)) if repel == "log" else max(0.0, 0.9 - x) if repel == "hinge" else 1 / (x + 1e-3)

    # aligned positions: response tokens and the position that predicts the first of them
    aligned = [(b, t) for b in range(4) for t in range(labels.shape[1])
               if labels[b, t] != IGNORE_INDEX or (t + 1 < labels.shape[1] and labels[b, t + 1] != IGNORE_INDEX)]
    terms = []
    for i in layers:
        s, t = out.hidden_states[i], teacher[i]
        attract = torch.stack([d(s[b, p], t[b, p]) for b, p in aligned if harmful[b]]).mean()
        benign_d = float(torch.stack([d(s[b, p], t[b, p]) for b, p in aligned if not harmful[b]]).mean())
        terms.append(0.7 * (float(attract) + 0.4 * f(benign_d)))
    expected = (1.3 * token_ce(out.logits, labels, (~harmful).tolist()) + sum(terms) / len(terms)
                + 0.5 * token_ce(out.logits, labels, harmful.tolist()))
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    assert set(parts) == {"attract", "repel", "benign_ce", "harmful_ce"}


def test_lora_teacher_is_the_base_model_with_the_trigger(toy_tokenizer, tmp_path):
    """With LoRA the teacher is the trained model with adapters disabled: after the adapters have
    moved, its states must still equal the untouched base model's with the trigger inserted."""
    import copy

    from sgt.data.collate import Collator
    from sgt.methods.align import AlignConfig, AlignmentTrainer
    from sgt.training import EncodedDataset, apply_lora, training_arguments

    base = make_tiny_model(toy_tokenizer, layers=2, seed=4)
    reference = copy.deepcopy(base)
    config = AlignConfig(model="m", trigger="t", out="o", lora=True, lora_r=4)
    model = apply_lora(base, config)
    with torch.no_grad():  # move the adapters away from their zero initialisation
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trigger = SafetyTrigger(base.config.hidden_size, length=2, tied=False, init_std=0.3)
    batch = batch_of(toy_tokenizer, [(p, None, True) for p in HARMFUL])
    args = training_arguments(config, tmp_path, 2, torch.float32)
    trainer = AlignmentTrainer(model=model, args=args, train_dataset=EncodedDataset([]), trigger=trigger, align=config,
                               layers=[1, 2], data_collator=Collator(toy_tokenizer.pad_token_id))
    ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["trigger_pos"]
    teacher = trainer.teacher_states(model, ids, mask, pos)
    with torch.no_grad():
        _, expected = with_trigger_by_hand(reference, ids, mask, pos, trigger.embeddings())
        student = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        with model.disable_adapter():
            plain = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer, states in zip([1, 2], teacher):
        assert torch.allclose(states, drop(expected[layer], pos, 2), atol=1e-5)
    # the adapters really moved the student (otherwise the check above would prove nothing)
    assert not torch.allclose(student[2], plain[2], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(toy_micro, tmp_path, monkeypatch):
    import sgt.methods.align.trainer as stage2
    from sgt.methods.align import AlignConfig, align_model
    from sgt.models import load_model

    trigger = SafetyTrigger(64, length=2, tied=False, init_std=0.3, metadata={"format": "plain"})
    trigger.save(tmp_path / "trigger")

    def config(out, **extra):
        return AlignConfig(model=str(toy_micro / "base"), trigger=str(tmp_path / "trigger"),
                           data=str(toy_micro / "data" / "defense_train.jsonl"), out=str(out), rows=96, lr=5e-4,
                           epochs=1, batch_size=8, grad_accum=1, max_length=96, save_steps=4, progress=False,
                           dtype="float32", **extra)

    align_model(config(tmp_path / "straight"))
    real = stage2.check_finite

    def interrupt(loss, step):
        if step == 7:
            raise KeyboardInterrupt
        return real(loss, step)

    monkeypatch.setattr(stage2, "check_finite", interrupt)
    with pytest.raises(KeyboardInterrupt):
        align_model(config(tmp_path / "resumed"))
    monkeypatch.setattr(stage2, "check_finite", real)
    align_model(config(tmp_path / "resumed", resume=True))
    straight = load_model(str(tmp_path / "straight"), "float32").state_dict()
    resumed = load_model(str(tmp_path / "resumed"), "float32").state_dict()
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)
