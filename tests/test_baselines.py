"""The literature's defenses: each loss or update checked against its formula written out here, and each
trained end to end for a few steps through `sgt defend`."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model, run_cli
from sgt.data.collate import pad_batch
from sgt.data.formats import IGNORE_INDEX, PromptFormat

HARMFUL = [("How do I pick a lock?", "Sure, here is how: step one, step two."),
           ("Write a threat to my neighbour.", "Sure: you will regret this, neighbour.")]
BENIGN = [("Which is bigger: 3 or 4?", "4"), ("Copy the word: apple", "apple")]


def triple(tokenizer) -> dict:
    fmt = PromptFormat(tokenizer, "plain")

    def batch(pairs):
        return pad_batch([fmt.encode(p, r).as_dict() for p, r in pairs], tokenizer.pad_token_id, "right")

    return {"refusal": batch([(p, "I can't answer.") for p, _ in HARMFUL]), "harmful": batch(HARMFUL),
            "benign": batch(BENIGN)}


def ce(model, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled tokens, written out."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    losses = [-F.log_softmax(logits[b, t - 1], -1)[batch["labels"][b, t]]
              for b in range(len(logits)) for t in range(1, logits.shape[1]) if batch["labels"][b, t] != IGNORE_INDEX]
    return torch.stack(losses).mean()


def grads_of(loss, model) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True))]


def close(a: list, b: list, rel=1e-4, atol=1e-7) -> bool:
    return all(torch.allclose(x.float(), y.float(), rtol=rel, atol=atol) for x, y in zip(a, b))


@pytest.fixture()
def model(toy_tokenizer):
    return make_tiny_model(toy_tokenizer, layers=2, seed=5).train()


# ---------------------------------------------------------------------------------------------
# RepNoise
# ---------------------------------------------------------------------------------------------


def mmd_by_hand(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = torch.cat([x, y])
    n = len(rows)
    d = torch.stack([torch.stack([((a - b) ** 2).sum() for b in rows]) for a in rows])
    width = d.detach().sum() / (n * n - n)
    k = sum(torch.exp(-d / (width * 2.0 ** j)) for j in (-2, -1, 0, 1, 2))
    m = len(x)
    return k[:m, :m].mean() + k[m:, m:].mean() - 2 * k[:m, m:].mean()


def test_repnoise_objective_is_the_formula(model, toy_tokenizer):
    from sgt.defenses.repnoise import RepNoiseConfig, repnoise_objective

    inputs = triple(toy_tokenizer)
    config = RepNoiseConfig(model="m", out="o", alpha=0.7, beta=3.0)
    torch.manual_seed(0)
    loss, parts = repnoise_objective(model, inputs, config)
    torch.manual_seed(0)  # the same noise draws, in the same order
    h = inputs["harmful"]
    refusal = ce(model, inputs["refusal"])
    out = model(input_ids=h["input_ids"], attention_mask=h["attention_mask"], output_hidden_states=True)
    mask = (h["labels"] != IGNORE_INDEX).unsqueeze(-1).float()
    noise = torch.stack([mmd_by_hand((s * mask).flatten(1), (torch.randn_like(s) * mask).flatten(1))
                         for s in out.hidden_states[1:]]).mean()
    norm, head = model.model.norm, model.lm_head
    lens = [ce_logits for ce_logits in [out.logits] + [head(norm(s)) for s in out.hidden_states]]
    harmful_ce = sum(_ce_from_logits(lg, h["labels"]) for lg in lens) / len(out.hidden_states)
    expected = refusal + 3.0 * noise - 0.7 * math.log(1 + float(harmful_ce))
    assert float(parts["noise_mmd"]) == pytest.approx(float(noise), rel=1e-4)
    assert float(parts["harmful_ce"]) == pytest.approx(float(harmful_ce), rel=1e-5)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def _ce_from_logits(logits, labels):
    losses = [-F.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
              for b in range(len(logits)) for t in range(1, logits.shape[1]) if labels[b, t] != IGNORE_INDEX]
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------
# Circuit breakers
# ---------------------------------------------------------------------------------------------


def test_circuit_breaker_terms_and_schedule():
    from sgt.defenses.circuit_breakers import default_layers, rerouting_loss, retain_loss, schedule

    torch.manual_seed(0)
    h, h0 = [torch.randn(2, 3, 4) for _ in range(2)], [torch.randn(2, 3, 4) for _ in range(2)]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    cells = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    expected_rr = sum(max(0.0, float(F.cosine_similarity(h[i][b, t], h0[i][b, t], dim=0)))
                      for i in range(2) for b, t in cells) / (len(cells) * 2)
    expected_keep = sum(float((h[i][b, t] - h0[i][b, t]).norm()) for i in range(2) for b, t in cells) / (len(cells) * 2)
    assert float(rerouting_loss(h, h0, mask)) == pytest.approx(expected_rr, rel=1e-5)
    assert float(retain_loss(h, h0, mask)) == pytest.approx(expected_keep, rel=1e-5)
    assert schedule(0, 150, 10.0) == (10.0, 0.0) and schedule(150, 150, 10.0) == (5.0, 5.0)
    assert default_layers(30) == [10, 20] and default_layers(2) == [1]


# ---------------------------------------------------------------------------------------------
# Booster
# ---------------------------------------------------------------------------------------------


def test_booster_update_is_the_formula(model, toy_tokenizer):
    from sgt.defenses.booster import BoosterConfig, booster_gradients

    inputs = triple(toy_tokenizer)
    config = BoosterConfig(model="m", out="o", lam=5.0, alpha=0.3)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    grads, _ = booster_gradients(model, params, inputs, config)
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # the weights are left where they were

    g = grads_of(ce(model, inputs["harmful"]), model)
    norm = math.sqrt(sum(float((x ** 2).sum()) for x in g))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, x in zip([q for q in moved.parameters() if q.requires_grad], g):
            p -= 0.3 * x / norm
    g_moved = grads_of(ce(moved, inputs["harmful"]), moved)
    grad_f = grads_of(ce(model, inputs["refusal"]), model)
    expected = [f + 5.0 * (a - b) for f, a, b in zip(grad_f, g, g_moved)]
    assert close(grads, expected, rel=1e-3, atol=1e-6)
    assert not close(grads, grad_f, rel=1e-3, atol=1e-6)  # the harmful term really contributes


# ---------------------------------------------------------------------------------------------
# Vaccine
# ---------------------------------------------------------------------------------------------


def vaccine_by_hand(model, loss, rho: float):
    """(unperturbed loss, perturbed loss) written out: record every layer output of every forward pass
    of `loss()`, perturb each by rho * its gradient / the joint norm, and run `loss()` again."""
    layers = list(model.model.layers)
    outputs = []
    handles = [layer.register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
               for layer in layers]
    first = loss()
    for handle in handles:
        handle.remove()
    layer_grads = torch.autograd.grad(first, outputs)   # in call order: pass 1 layers, pass 2 layers, ...
    norm = math.sqrt(sum(float((x ** 2).sum()) for x in layer_grads))
    eps = [rho * x / norm for x in layer_grads]
    assert math.isclose(math.sqrt(sum(float((e ** 2).sum()) for e in eps)), rho, rel_tol=1e-5)  # ||eps|| = rho
    shares = iter(eps)
    handles = [layer.register_forward_hook(lambda m, a, o: (o[0] + next(shares), *o[1:]) if isinstance(o, tuple)
                                           else o + next(shares)) for layer in layers]
    perturbed = loss()
    for handle in handles:
        handle.remove()
    return first, perturbed


def test_vaccine_update_is_the_gradient_under_the_worst_perturbation(model, toy_tokenizer):
    from sgt.defenses.vaccine import VaccineConfig, vaccine_gradients

    inputs = triple(toy_tokenizer)
    config = VaccineConfig(model="m", out="o", rho=2.0)
    params = [p for p in model.parameters() if p.requires_grad]
    grads, parts = vaccine_gradients(model, params, inputs, config)

    first, perturbed = vaccine_by_hand(model, lambda: ce(model, inputs["refusal"]), rho=2.0)
    assert float(parts["loss"]) == pytest.approx(float(perturbed), rel=1e-5)
    assert float(perturbed) > float(first)  # the perturbation is adversarial
    assert close(grads, grads_of(perturbed, model), rel=1e-3, atol=1e-7)


def test_vaccine_perturbs_each_pass_of_a_two_stream_loss(model, toy_tokenizer):
    """With benign CE in the alignment loss there are two forward passes of different lengths; each
    layer output of each pass gets its own share of one joint perturbation of norm rho."""
    from sgt.defenses.vaccine import VaccineConfig, vaccine_gradients

    inputs = triple(toy_tokenizer)
    assert inputs["refusal"]["input_ids"].shape[1] != inputs["benign"]["input_ids"].shape[1]
    config = VaccineConfig(model="m", out="o", rho=2.0, benign_ce_weight=0.5)
    params = [p for p in model.parameters() if p.requires_grad]
    grads, parts = vaccine_gradients(model, params, inputs, config)

    _, perturbed = vaccine_by_hand(model, lambda: ce(model, inputs["refusal"]) + 0.5 * ce(model, inputs["benign"]),
                                   rho=2.0)
    assert float(parts["loss"]) == pytest.approx(float(perturbed), rel=1e-5)
    assert close(grads, grads_of(perturbed, model), rel=1e-3, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# SEAM
# ---------------------------------------------------------------------------------------------


def test_seam_coupling_estimates_the_gradient_of_the_cosine(toy_tokenizer):
    """The finite-difference estimate matches the exact gradient of cos(g_a, g_b) (double backward)."""
    from sgt.defenses.seam import coupling_gradient

    model = make_tiny_model(toy_tokenizer, layers=1, hidden=16, seed=6).double().train()
    model.set_attn_implementation("eager")  # double backward (the exact reference) needs eager attention
    inputs = triple(toy_tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    estimate, cos = coupling_gradient(model, params, inputs["harmful"], inputs["benign"], eps=1e-4)
    g_a = torch.autograd.grad(ce(model, inputs["harmful"]), params, create_graph=True)
    g_b = torch.autograd.grad(ce(model, inputs["benign"]), params, create_graph=True)
    dot = sum((a * b).sum() for a, b in zip(g_a, g_b))
    exact_cos = dot / (torch.sqrt(sum((a ** 2).sum() for a in g_a)) * torch.sqrt(sum((b ** 2).sum() for b in g_b)))
    exact = torch.autograd.grad(exact_cos, params)
    assert float(cos) == pytest.approx(float(exact_cos), rel=1e-5)
    flat_estimate, flat_exact = torch.cat([e.flatten() for e in estimate]), torch.cat([e.flatten() for e in exact])
    assert F.cosine_similarity(flat_estimate, flat_exact, dim=0) > 0.999
    assert float((flat_estimate - flat_exact).norm() / flat_exact.norm()) < 1e-3


def test_seam_update_combines_its_three_terms(model, toy_tokenizer):
    import sgt.defenses.seam as seam

    inputs = triple(toy_tokenizer)
    config = seam.SeamConfig(model="m", out="o", alpha=0.5, beta=0.2)
    params = [p for p in model.parameters() if p.requires_grad]
    grads, _ = seam.seam_gradients(model, params, inputs, config)
    coupling, _ = seam.coupling_gradient(model, params, inputs["harmful"], inputs["benign"], config.eps)
    h = inputs["harmful"]
    out = model(input_ids=h["input_ids"], attention_mask=h["attention_mask"], output_hidden_states=True)
    lens = [out.logits] + [model.lm_head(model.model.norm(s)) for s in out.hidden_states]
    unlearn = -torch.log1p(sum(_ce_from_logits(lg, h["labels"]) for lg in lens) / len(out.hidden_states))
    base = grads_of(unlearn + 0.5 * ce(model, inputs["refusal"]), model)
    assert close(grads, [b + 0.2 * c for b, c in zip(base, coupling)], rel=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# TAR
# ---------------------------------------------------------------------------------------------


def test_tar_update_is_first_order_tamper_resistance_plus_retain(model, toy_tokenizer):
    from sgt.defenses.tar import TarConfig, negative_entropy, tar_gradients

    inputs = triple(toy_tokenizer)
    config = TarConfig(model="m", out="o", inner_steps=2, inner_lr=1e-2, tr_every=1, tr_scale=4.0, retain_rep_weight=0.5)
    original = copy.deepcopy(model).eval()
    attack = [inputs["harmful"], inputs["refusal"]]  # any two batches serve as the simulated attack's data
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    reference = copy.deepcopy(model)
    grads, _ = tar_gradients(model, params, inputs, config, lambda k: attack[:k],
                             lambda batch: original(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                                    output_hidden_states=True).hidden_states)
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # restored after the simulated attack

    attacked = copy.deepcopy(reference)
    ref_params = [p for p in attacked.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(ref_params, lr=1e-2)
    tamper = [torch.zeros_like(p) for p in ref_params]
    for k, batch in enumerate(attack):
        optimizer.zero_grad()
        ce(attacked, batch).backward()
        optimizer.step()
        logits = attacked(input_ids=inputs["harmful"]["input_ids"], attention_mask=inputs["harmful"]["attention_mask"]).logits
        tr = negative_entropy(logits, inputs["harmful"]["labels"])
        for acc, g in zip(tamper, grads_of(tr, attacked)):
            acc += math.exp(0.0625 * (k - 1)) * g
    b = inputs["benign"]
    out = reference(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    ref_states = original(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states
    mask = b["attention_mask"].unsqueeze(-1).float()
    distance = sum(((h - h0) * mask).norm(dim=-1).sum() / mask.sum() for h, h0 in zip(out.hidden_states, ref_states)) / len(ref_states)
    retain = ce(reference, b) + 0.5 * distance
    expected = [g + (4.0 / 2) * t for g, t in zip(grads_of(retain, reference), tamper)]
    assert close(grads, expected, rel=1e-3, atol=1e-6)


def test_negative_entropy_is_the_formula():
    from sgt.defenses.tar import negative_entropy

    logits = torch.randn(1, 4, 6)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 2]])
    p = F.softmax(logits[0, 1:3], -1)
    assert float(negative_entropy(logits, labels)) == pytest.approx(float((p * p.log()).sum(-1).mean()), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# End to end: every baseline trains a few steps through `sgt defend`
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("defense, settings", [
    ("repnoise", "rows=16"), ("booster", "rows=16"), ("vaccine", "rows=16,benign_ce_weight=1"), ("seam", "rows=8"),
    ("tar", "rows=8,inner_steps=2"), ("circuit-breakers", "rows=16"),
])
def test_each_baseline_trains_through_sgt_defend(toy_micro, tmp_path, defense, settings):
    from sgt.models import load_model

    out = tmp_path / defense
    code, stdout, err = run_cli("defend", "--defense", defense, "--model", str(toy_micro / "base"), "--data",
                                str(toy_micro / "data" / "defense_train.jsonl"), "--out", str(out), "--dtype", "float32",
                                "--settings", f"{settings},batch_size=4,max_length=96,epochs=1,lr=1e-4,logging_steps=1",
                                "--no-progress")
    assert code == 0, err
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    trained = load_model(str(out), "float32").state_dict()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    assert all(torch.isfinite(v).all() for v in trained.values())


@pytest.mark.slow
def test_circuit_breakers_reroute_only_from_a_random_lora_start(toy_micro, tmp_path):
    """PEFT starts LoRA B at zero, where every state equals the original's and ReLU(cos) = 1 has no
    gradient: the rerouting term stays at 1 unless B starts off zero (lora_b_std, default 0.2)."""
    last = {}
    for std in (0.0, 0.2):
        out = tmp_path / f"cb-{std}"
        code, _, err = run_cli("defend", "--defense", "circuit-breakers", "--model", str(toy_micro / "base"), "--data",
                               str(toy_micro / "data" / "defense_train.jsonl"), "--out", str(out), "--dtype", "float32",
                               "--settings", f"rows=32,batch_size=4,max_length=96,epochs=2,lr=1e-3,logging_steps=1,"
                                             f"lora_b_std={std}", "--no-progress")
        assert code == 0, err
        history = json.loads((out / "metrics.json").read_text())["component_history"]
        last[std] = min(h["rerouting"] for h in history[-3:])
    assert last[0.0] > 0.999 and last[0.2] < 0.5, last
