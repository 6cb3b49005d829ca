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


STAGE1_CASES = {  # name: (TriggerConfig values, (consistency weight, noise std, temperature, benign weight))
    # large noise and weights, so that every term moves the total well beyond the tolerance
    "custom": ({"consistency_weight": 7.0, "noise_draws": 2, "noise_std": 0.5, "temperature": 2.0,
                "benign_weight": 30.0}, (7.0, 0.5, 2.0, 30.0)),
    # the reference: weight 1, noise N(0, 0.01^2), 2 draws, temperature 1, no benign term
    "reference": ({"reference": True}, (1.0, 0.01, 1.0, 0.0)),
}


@pytest.mark.parametrize("case", sorted(STAGE1_CASES))
def test_stage1_loss_is_refusal_ce_plus_consistency_kl_plus_benign_kl(toy_micro, toy_tokenizer, case):
    from sgt.config import build_config
    from sgt.methods.trigger import TriggerConfig, trigger_loss
    from sgt.models import load_model

    values, (w_c, std, temp, w_b) = STAGE1_CASES[case]
    model = load_model(str(toy_micro / "base"), "float32").eval()  # trained: its outputs react to the trigger
    rows = [(p, None, True) for p in HARMFUL] + [(p, r, False) for p, r in BENIGN]
    batch = batch_of(toy_tokenizer, rows)
    config = build_config(TriggerConfig, {"model": "m", "out": "o", **values})
    trigger = SafetyTrigger(model.config.hidden_size, length=3, tied=False, init_std=0.5)
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
            noisy, _ = with_trigger_by_hand(model, ids, mask, pos, vectors + torch.randn_like(vectors) * std)
            draws.append(torch.stack([kl(logits[b, t], noisy[b, t], temp) for b, t in places]).mean())
        consistency = sum(draws) / 2
        plain = model(input_ids=ids, attention_mask=mask).logits
        kept = drop(logits, pos, k)
        benign_places = predicting_positions(labels, (~harmful).tolist())
        benign = torch.stack([kl(plain[b, t], kept[b, t], temp) for b, t in benign_places]).mean()
    expected = ce + w_c * consistency + w_b * benign
    assert parts["refusal_ce"] == pytest.approx(float(ce), rel=1e-4)
    assert parts["consistency_kl"] == pytest.approx(float(consistency), rel=1e-3, abs=1e-9)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    if case == "custom":  # every term really exercised: each moves the total far beyond the tolerance
        assert parts["benign_kl"] == pytest.approx(float(benign), rel=1e-4)
        assert w_c * float(consistency) > 1e-3 * float(expected) and w_b * float(benign) > 1e-3 * float(expected)
    else:  # the reference's other choices: one tied vector, plain AdamW with weight decay, no clipping
        assert "benign_kl" not in parts
        assert (config.length, config.tied, config.lr, config.weight_decay, config.max_grad_norm) == (1, True, 1e-3, 0.01, 0.0)


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


@pytest.fixture()
def no_bos_tokenizer(toy_tokenizer):
    """The toy tokenizer without its BOS (like Qwen3-Base): masks must not shift by one."""
    import copy

    from tokenizers import processors

    tokenizer = copy.deepcopy(toy_tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    assert tokenizer("", add_special_tokens=True)["input_ids"] == []
    return tokenizer


CASES = {  # name: (AlignConfig values, the same settings spelled out for the hand-written formula)
    "mse-log-row": ({"distance": "mse", "repel": "log", "repel_reduce": "row", "alpha": 0.7, "beta": 0.4,
                     "ce_weight": 1.3, "harmful_ce_weight": 0.5},
                    dict(distance="mse", repel="log", reduce="row", alpha=0.7, beta=0.4, ce=1.3, harmful_ce=0.5,
                         predicting=True)),
    "relative-hinge-token": ({"distance": "relative", "repel": "hinge", "repel_reduce": "token", "repel_margin": 0.9,
                              "alpha": 2.0, "beta": 3.0, "ce_weight": 0.5},
                             dict(distance="relative", repel="hinge", reduce="token", alpha=2.0, beta=3.0, ce=0.5,
                                  harmful_ce=0.0, predicting=True)),
    "cosine-inverse-row": ({"distance": "cosine", "repel": "inverse", "alpha": 1.5, "beta": 0.2},
                           dict(distance="cosine", repel="inverse", reduce="row", alpha=1.5, beta=0.2, ce=1.0,
                                harmful_ce=0.0, predicting=True)),
    # trigger-output distillation: KL(teacher || student) at the aligned positions of the harmful rows
    "relative-none-distill": ({"distance": "relative", "repel": "none", "alpha": 3.0, "distill_weight": 0.8},
                              dict(distance="relative", repel=None, reduce="row", alpha=3.0, beta=1.0, ce=1.0,
                                   harmful_ce=0.0, predicting=True, distill=0.8)),
    # reference: true = the reference code's choices without its bugs: its intended mask (response
    # tokens only), MSE, log repel per row, alpha = beta = 1, CE on benign rows only
    "reference": ({"reference": True},
                  dict(distance="mse", repel="log", reduce="row", alpha=1.0, beta=1.0, ce=1.0, harmful_ce=0.0,
                       predicting=False)),
}


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stage2_objective_is_the_formula(toy_tokenizer, no_bos_tokenizer, case, bos):
    from sgt.config import build_config
    from sgt.methods.align import AlignConfig, alignment_objective

    tokenizer = toy_tokenizer if bos else no_bos_tokenizer
    values, spec = CASES[case]
    model = make_tiny_model(toy_tokenizer, layers=3, seed=2)
    teacher_model = make_tiny_model(toy_tokenizer, layers=3, seed=3)
    rows = [(p, None, True) for p in HARMFUL] + [(p, r, False) for p, r in BENIGN]
    batch = batch_of(tokenizer, rows)
    ids, mask, labels, harmful = (batch[k] for k in ("input_ids", "attention_mask", "labels", "harmful"))
    # the labels are exactly the response tokens (+ EOS), with or without a BOS in front
    for b, (_, response, is_harmful) in enumerate(rows):
        assert [v for v in labels[b].tolist() if v != IGNORE_INDEX][:-1] == tokenizer(
            " " + ("I can't answer." if is_harmful else response), add_special_tokens=False)["input_ids"]
    config = build_config(AlignConfig, {"model": "m", "trigger": "t", "out": "o", **values})
    layers = [1, 3]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        teacher_out = teacher_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        teacher = teacher_out.hidden_states
        from sgt.methods.align.trainer import distillation_positions

        at = distillation_positions(labels, mask, harmful, config)
        loss, parts = alignment_objective(out.logits, [out.hidden_states[i] for i in layers],
                                          [teacher[i] for i in layers], labels, mask, harmful, config,
                                          teacher_logits=teacher_out.logits[at])

    def d(s, t):
        if spec["distance"] == "mse":
            return float(((s - t) ** 2).mean())
        if spec["distance"] == "relative":
            return float(((s - t) ** 2).sum() / (t ** 2).sum())
        return float(1 - (s @ t) / (s.norm() * t.norm()))

    def f(x):
        return {"log": lambda: math.log(1 + 1 / (x + 1e-3)), "hinge": lambda: max(0.0, 0.9 - x),
                "inverse": lambda: 1 / (x + 1e-3)}[spec["repel"]]()

    def aligned(b):  # response tokens, and (predicting) the position that predicts the first of them
        return [t for t in range(labels.shape[1]) if labels[b, t] != IGNORE_INDEX or
                (spec["predicting"] and t + 1 < labels.shape[1] and labels[b, t + 1] != IGNORE_INDEX)]

    terms = []
    for i in layers:
        s, t = out.hidden_states[i], teacher[i]
        attract = [d(s[b, p], t[b, p]) for b in range(4) if harmful[b] for p in aligned(b)]
        benign_rows = [[d(s[b, p], t[b, p]) for p in aligned(b)] for b in range(4) if not harmful[b]]
        if spec["repel"] is None:
            repel = 0.0
        elif spec["reduce"] == "row":
            repel = sum(f(sum(r) / len(r)) for r in benign_rows) / len(benign_rows)
        else:
            pooled = [x for r in benign_rows for x in r]
            repel = f(sum(pooled) / len(pooled))
        terms.append(spec["alpha"] * (sum(attract) / len(attract) + spec["beta"] * repel))
    expected = spec["ce"] * token_ce(out.logits, labels, (~harmful).tolist()) + sum(terms) / len(terms)
    if spec["harmful_ce"]:
        expected = expected + spec["harmful_ce"] * token_ce(out.logits, labels, harmful.tolist())
    if spec.get("distill"):  # KL(p_teacher || p_student), one term per aligned position of a harmful row
        kls = [float((F.softmax(teacher_out.logits[b, p], -1) * (F.log_softmax(teacher_out.logits[b, p], -1)
                                                                  - F.log_softmax(out.logits[b, p], -1))).sum())
               for b in range(4) if harmful[b] for p in aligned(b)]
        expected = expected + spec["distill"] * sum(kls) / len(kls)
        assert float(parts["distill_kl"]) == pytest.approx(sum(kls) / len(kls), rel=1e-5)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert {"attract", "repel", "benign_ce"} <= set(parts)


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
    at = batch["labels"] != IGNORE_INDEX  # some positions: the distillation teacher's logits are read there
    teacher, teacher_logits = trainer.teacher_states(model, ids, mask, pos, logits_at=at)
    with torch.no_grad():
        expected_logits, expected = with_trigger_by_hand(reference, ids, mask, pos, trigger.embeddings())
        student = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        with model.disable_adapter():
            plain = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer, states in zip([1, 2], teacher):
        assert torch.allclose(states, drop(expected[layer], pos, 2), atol=1e-5)
    # ... and its logits are the base model's WITH the trigger at exactly those positions
    assert torch.allclose(teacher_logits, drop(expected_logits, pos, 2)[at], atol=1e-4)
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


def test_anchor_at_simulated_attack_weights_is_first_order(toy_tokenizer, tmp_path):
    """attack_steps: the gradient added is the attract term's gradient at the attacked weights (computed here
    by attacking a copy by hand); the weights and earlier gradients are restored."""
    import copy

    from sgt.data.collate import Collator
    from sgt.methods.align import AlignConfig, AlignmentTrainer, alignment_loss, position_mask
    from sgt.training import EncodedDataset, training_arguments

    model = make_tiny_model(toy_tokenizer, layers=2, seed=7).train()
    teacher = copy.deepcopy(model).eval()
    config = AlignConfig(model="m", trigger="t", out="o", attack_steps=2, attack_lr=1e-2, attack_weight=3.0,
                         batch_size=2, grad_accum=1, repel="none")
    fmt = PromptFormat(toy_tokenizer, "plain")
    attack_rows = [fmt.encode(p, "Sure, here is how.").as_dict() for p in HARMFUL]
    dataset = EncodedDataset([])
    dataset.attack_rows = attack_rows
    trigger = SafetyTrigger(model.config.hidden_size, 2, tied=False, init_std=0.3)
    trainer = AlignmentTrainer(model=model, args=training_arguments(config, tmp_path, 2, torch.float32),
                               train_dataset=dataset, data_collator=Collator(toy_tokenizer.pad_token_id),
                               trigger=trigger, align=config, layers=[1, 2], teacher=teacher)
    inputs = batch_of(toy_tokenizer, [(p, None, True) for p in HARMFUL])
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)  # gradients accumulated before: must be kept
    before = [p.detach().clone() for p in params]
    reference = copy.deepcopy(model)
    trainer._attack_rng = __import__("random").Random(0)
    expected_rng = __import__("random").Random(0)
    draws = [[attack_rows[expected_rng.randrange(2)] for _ in range(2)] for _ in range(2)]
    attract = trainer.anchor_after_attack(model, inputs)
    assert all(torch.equal(p, b) for p, b in zip(params, before))

    ref_params = [p for p in reference.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(ref_params, lr=1e-2)
    for rows in draws:
        batch = pad_batch(rows, toy_tokenizer.pad_token_id, "right")
        optimizer.zero_grad()
        logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        token_ce(logits, batch["labels"], [True, True]).backward()
        optimizer.step()
    with torch.no_grad():
        teacher_states, _ = trainer.teacher_states(reference, inputs["input_ids"], inputs["attention_mask"],
                                                   inputs["trigger_pos"])
    out = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
    aligned = position_mask(inputs["labels"], inputs["attention_mask"], "predicting")
    expected_attract, _ = alignment_loss([out.hidden_states[i] for i in (1, 2)], teacher_states, aligned,
                                         inputs["harmful"], config)
    expected = torch.autograd.grad(expected_attract, ref_params, allow_unused=True)
    assert float(attract) == pytest.approx(float(expected_attract), rel=1e-5)
    for p, g in zip(params, expected):
        assert torch.allclose(p.grad, 1 + 3.0 * (g if g is not None else 0), rtol=1e-4, atol=1e-6)


def test_alpha_scales_the_anchor_after_a_simulated_attack_and_the_log_is_the_distance(toy_tokenizer, tmp_path):
    """With alpha != 1: the gradient added is attack_weight * alpha * d(attract)/d(weights) at the attacked
    weights (alpha weighs the alignment term wherever it is measured), and attract_after_attack is the
    distance itself - mean over layers of the mean squared state distance at the aligned positions of the
    harmful rows - like the logged `attract`, written out here by hand."""
    import copy

    from sgt.data.collate import Collator
    from sgt.methods.align import AlignConfig, AlignmentTrainer, position_mask
    from sgt.training import EncodedDataset, training_arguments

    alpha, weight = 0.5, 3.0
    model = make_tiny_model(toy_tokenizer, layers=2, seed=8).train()
    config = AlignConfig(model="m", trigger="t", out="o", attack_steps=1, attack_lr=1e-2, attack_weight=weight,
                         alpha=alpha, batch_size=2, grad_accum=1, repel="none")
    fmt = PromptFormat(toy_tokenizer, "plain")
    dataset = EncodedDataset([])
    dataset.attack_rows = [fmt.encode(p, "Sure, here is how.").as_dict() for p in HARMFUL]
    trainer = AlignmentTrainer(model=model, args=training_arguments(config, tmp_path, 2, torch.float32),
                               train_dataset=dataset, data_collator=Collator(toy_tokenizer.pad_token_id),
                               trigger=SafetyTrigger(model.config.hidden_size, 2, tied=False, init_std=0.3),
                               align=config, layers=[1, 2], teacher=copy.deepcopy(model).eval())
    inputs = batch_of(toy_tokenizer, [(p, None, True) for p in HARMFUL])
    attacked = copy.deepcopy(model)
    trainer._attack_rng = __import__("random").Random(0)
    rng = __import__("random").Random(0)
    rows = [dataset.attack_rows[rng.randrange(2)] for _ in range(2)]
    params = [p for p in model.parameters() if p.requires_grad]
    logged = trainer.anchor_after_attack(model, inputs)

    attacked_params = [p for p in attacked.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(attacked_params, lr=1e-2)  # the simulated attack, by hand
    batch = pad_batch(rows, toy_tokenizer.pad_token_id, "right")
    token_ce(attacked(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"],
             [True, True]).backward()
    optimizer.step()
    with torch.no_grad():
        teacher, _ = trainer.teacher_states(attacked, inputs["input_ids"], inputs["attention_mask"],
                                            inputs["trigger_pos"])
    states = attacked(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                      output_hidden_states=True).hidden_states
    places = position_mask(inputs["labels"], inputs["attention_mask"], "predicting").nonzero().tolist()
    distance = sum(torch.stack([((states[layer][b, t] - t_states[b, t]) ** 2).mean() for b, t in places]).mean()
                   for layer, t_states in zip((1, 2), teacher)) / 2
    expected = torch.autograd.grad(distance, attacked_params, allow_unused=True)
    assert float(logged) == pytest.approx(float(distance), rel=1e-5)   # the distance, not alpha times it
    for p, g in zip(params, expected):
        assert torch.allclose(p.grad, weight * alpha * (g if g is not None else torch.zeros_like(p)), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("cls", ["AlignConfig", "TriggerConfig"])
def test_reference_true_gives_the_reference_settings_from_python_yaml_and_the_command_line(cls, tmp_path):
    from sgt.cli import build_parser
    from sgt.config import config_from_args, load_config
    from sgt.methods.align import AlignConfig
    from sgt.methods.trigger import TriggerConfig

    config_class = {"AlignConfig": AlignConfig, "TriggerConfig": TriggerConfig}[cls]
    command = {"AlignConfig": "align", "TriggerConfig": "trigger"}[cls]
    from_python = config_class(reference=True)
    assert all(getattr(from_python, k) == v for k, v in config_class.REFERENCE.items())
    assert from_python != config_class()  # the reference differs from the defaults somewhere
    (tmp_path / "c.yaml").write_text("reference: true\n")
    assert load_config(config_class, tmp_path / "c.yaml") == from_python
    assert config_from_args(config_class, build_parser([command]).parse_args([command, "--reference"])) == from_python
    explicit = config_class(reference=True, lr=0.25, seed=3)  # set explicitly: it wins
    assert (explicit.lr, explicit.seed) == (0.25, 3)
    assert config_from_args(config_class, build_parser([command]).parse_args(
        [command, "--reference", "--lr", "0.25", "--seed", "3"])) == explicit
