"""The real world's harmful prompts, split four ways and contamination-guarded.

  evaluation  HarmBench standard behaviours of its test split: never trained on, never tuned against
  validation  HarmBench standard behaviours of its validation split + a held-out part of Do-Not-Answer:
              for choosing settings (the same request style as evaluation, and a second style)
  attack      the rest of Do-Not-Answer (answered by the base model itself during the build) and the
              harmful-qa pairs (real compliant answers written for HarmBench requests) whose request is
              not one of HarmBench's copyright behaviours (song lyrics are not a safety harm)
  defense     Do-Not-Answer's defense part + AdvBench + StrongREJECT + the past/future-tense
              rephrasings: questions, imperative requests and rewordings, an equal share of each source
              up to the preset's cap, so that alignment sees more than one style of harmful request

The guard (`sgt.data.contamination`) checks every attack and defense prompt against the evaluation
and validation prompts, and every defense prompt against the attack prompts too (defense and attack
are disjoint). What it dropped, per source, and the closest pairs it kept go into the world's
`data/contamination.json`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..data.contamination import ContaminationGuard, GuardSettings, normalised
from ..data.sources import Example, load_examples


@dataclass
class PoolSpec:
    eval_set: str = "harmbench-test"
    val_sets: tuple[str, ...] = ("harmbench-val",)
    areas: tuple[str, ...] = ("malicious_uses", "information_hazard",
                              "discrimination_exclusion_toxicity_hateful_offensive")
    defense_fraction: float = 0.4        # of the Do-Not-Answer prompts: defense training
    val_fraction: float = 0.1            # held out for choosing defense settings; the rest: attack prompts
    max_donotanswer: int | None = None   # cap on Do-Not-Answer prompts before splitting (tests)
    harm_eval_n: int | None = None       # evaluation prompts (None: all)
    defense_sets: tuple[str, ...] = ("advbench", "strongreject", "past-tense", "future-tense")
    defense_harmful: int | None = 500    # harmful defense prompts over all sources (None: every kept one)
    attack_real_set: str | None = "harmful-qa"
    guard: GuardSettings = field(default_factory=GuardSettings)


def harmful_pool(spec: PoolSpec, seed: int, log=print) -> dict:
    """{"eval", "val", "val_parts", "attack", "attack_real", "defense": [Example], "contamination": {...},
    "sources": {...}}; the same seed gives the same parts."""
    rng = random.Random(seed)
    evaluation = _unique(load_examples(spec.eval_set))
    if spec.harm_eval_n is not None and spec.harm_eval_n < len(evaluation):
        evaluation = rng.sample(evaluation, spec.harm_eval_n)
    taken = {normalised(e.prompt) for e in evaluation}
    val_parts = {name: [e for e in _unique(load_examples(name)) if normalised(e.prompt) not in taken]
                 for name in spec.val_sets}
    dna = _donotanswer_parts(spec, rng, taken)
    val_parts["donotanswer"] = dna["val"]
    validation = [e for part in val_parts.values() for e in part]

    protected = [e.prompt for e in evaluation + validation]
    log(f"contamination guard: {len(protected)} protected prompts (evaluation + validation)")
    guard = ContaminationGuard(protected, spec.guard)
    attack = guard.filter(dna["attack"], "donotanswer (attack part)", text=_prompt)
    attack_real = _real_answers(spec, guard, _copyright_requests(spec)) if spec.attack_real_set else []

    defense_guard = ContaminationGuard(protected + [e.prompt for e in attack + attack_real], spec.guard)
    candidates = {"donotanswer": dna["defense"], **{name: _unique(load_examples(name)) for name in spec.defense_sets}}
    kept = {name: defense_guard.filter(rows, name, text=_prompt) for name, rows in candidates.items()}
    defense = _equal_shares(_disjoint(kept), spec.defense_harmful, rng)
    return {"eval": evaluation, "val": validation, "val_parts": val_parts, "attack": attack,
            "attack_real": attack_real, "defense": defense,
            "contamination": {"settings": vars(spec.guard), "protected": len(protected),
                              "against_evaluation_and_validation": guard.report,
                              "defense_against_evaluation_validation_and_attack": defense_guard.report},
            "sources": {name: sum(e.category == name for e in defense) for name in kept}}


def _prompt(example: Example) -> str:
    return example.prompt


def _unique(examples: list[Example]) -> list[Example]:
    seen, out = set(), []
    for e in examples:
        if normalised(e.prompt) not in seen:
            seen.add(normalised(e.prompt))
            out.append(e)
    return out


def _donotanswer_parts(spec: PoolSpec, rng: random.Random, taken: set[str]) -> dict[str, list[Example]]:
    """defense / val / attack parts of Do-Not-Answer, stratified by risk area."""
    pool = [e for e in _unique(load_examples("donotanswer", subset=",".join(spec.areas)))
            if normalised(e.prompt) not in taken]
    if spec.max_donotanswer is not None and spec.max_donotanswer < len(pool):
        pool = rng.sample(pool, spec.max_donotanswer)
    parts: dict[str, list[Example]] = {"defense": [], "val": [], "attack": []}
    for area in sorted({e.category for e in pool}):
        group = [e for e in pool if e.category == area]
        rng.shuffle(group)
        n_defense = round(len(group) * spec.defense_fraction)
        n_val = round(len(group) * spec.val_fraction)
        parts["defense"] += group[:n_defense]
        parts["val"] += group[n_defense:n_defense + n_val]
        parts["attack"] += group[n_defense + n_val:]
    return parts


def _copyright_requests(spec: PoolSpec) -> set[str]:
    """HarmBench's copyright behaviours (both splits): reproducing song lyrics is not a safety harm."""
    rows = [e for name in ("harmbench-val", "harmbench-test") for e in load_examples(name, subset="copyright")]
    return {normalised(e.prompt) for e in rows}


def _real_answers(spec: PoolSpec, guard: ContaminationGuard, excluded: set[str]) -> list[Example]:
    pairs = [e for e in _unique(load_examples(spec.attack_real_set)) if e.response]
    pairs = [e for e in pairs if normalised(e.prompt) not in excluded]
    return guard.filter(pairs, spec.attack_real_set, text=_prompt)


def _disjoint(kept: dict[str, list[Example]]) -> dict[str, list[Example]]:
    """Each prompt in one source only (AdvBench and StrongREJECT share some); sources tagged in `category`."""
    seen, out = set(), {}
    for name, rows in kept.items():
        out[name] = []
        for e in rows:
            if normalised(e.prompt) not in seen:
                seen.add(normalised(e.prompt))
                out[name].append(Example(e.prompt, None, True, name))
    return out


def _equal_shares(by_source: dict[str, list[Example]], cap: int | None, rng: random.Random) -> list[Example]:
    """Up to `cap` prompts, as evenly spread over the sources as their sizes allow."""
    pools = {name: rng.sample(rows, len(rows)) for name, rows in by_source.items()}
    if cap is None:
        picked = [e for rows in pools.values() for e in rows]
    else:
        counts = dict.fromkeys(pools, 0)
        remaining = cap
        while remaining > 0:
            open_sources = [n for n in pools if counts[n] < len(pools[n])]
            if not open_sources:
                break
            share = max(1, remaining // len(open_sources))
            for name in open_sources:
                step = min(share, len(pools[name]) - counts[name], remaining)
                counts[name] += step
                remaining -= step
        picked = [e for name, rows in pools.items() for e in rows[:counts[name]]]
    rng.shuffle(picked)
    return picked
