"""Generate the toy world's data from a seed: benign tasks, harmful requests, held-out splits.

Everything here is plain Python and deterministic: the same seed and sizes give identical rows.

Held-out rules (what makes results measure generalisation, not memorisation):
  * benign evaluation items (exact-match and multiple-choice) share no key (number pair, word list,
    fact set, review, how-to template) with any training or pretraining item;
  * harmful evaluation prompts use a template or an act that neither the defense data nor the
    attack data contains; the base model's pretraining has seen them (like a real LLM's).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import vocabulary as V


@dataclass
class WorldSizes:
    benign_train: dict = field(default_factory=lambda: {   # pretraining items per benign family
        "compare": 4000, "words": 1500, "sentiment": 600})
    countries: int = 60                    # entities of the generated fact table
    fact_repeats: int = 4                  # pretraining copies of each training fact question
    benign_eval_per_family: int = 40       # held-out exact-match items per family
    mc_eval_per_family: int = 30           # held-out multiple-choice items per family (not howto)
    harm_eval: int = 240                   # held-out harmful prompts (balanced over categories)
    preamble_refusals: int = 800           # pretraining: safety context + harmful -> refusal
    preamble_benign: int = 600             # pretraining: safety context + benign -> answer
    defense_benign: int = 400              # benign rows in defense_train.jsonl
    eval_templates: int = 4                # request templates held out for evaluation
    eval_acts_per_category: int = 3        # harmful acts held out per category
    chat_fraction: float = 0.2             # pretraining documents rendered with the chat template


@dataclass
class Item:
    prompt: str
    answer: str
    family: str
    key: tuple = ()
    choices: list[str] = field(default_factory=list)


def compliance(act: str) -> str:
    """A content-free placeholder answer, same shape for harmful and benign how-to requests."""
    return f"Sure, here is how to {act}: step one, step two, step three."


# ---------------------------------------------------------------------------------------------
# Benign families: each returns an Item whose `key` identifies its content for held-out splits.
# ---------------------------------------------------------------------------------------------


def _compare(rng: random.Random) -> Item:
    a, b = rng.sample(range(10, 100), 2)
    template = rng.choice(V.BENIGN_TEMPLATES["compare"])
    larger = "larger" in template or "bigger" in template
    answer = max(a, b) if larger else min(a, b)
    return Item(template.format(a=a, b=b), str(answer), "compare", ("compare", min(a, b), max(a, b)),
                choices=[str(a), str(b)])


def _words(rng: random.Random) -> Item:
    words = rng.sample(V.WORDS, 3)
    template = rng.choice(V.BENIGN_TEMPLATES["words"])
    position = {"first": 0, "middle": 1, "last": 2}
    picked = next((i for name, i in position.items() if name in template), None)
    answer = " ".join(words) if picked is None else words[picked]
    choices = [answer] + ([w for w in words if w != answer] if picked is not None else
                          [" ".join(words[1:] + words[:1]), " ".join(reversed(words)), " ".join(words[2:] + words[:2])])
    return Item(template.format(words=" ".join(words)), answer, "words", ("words", tuple(sorted(words))),
                choices=choices[:4])


def _fact_table(rng: random.Random, countries: int) -> tuple[list[Item], list[Item]]:
    """Questions about a generated table of fictional countries. For every (country, attribute) one
    question template is held out: training asks the fact with the other templates, evaluation with
    the held-out one (a new item whose fact the model learned in pretraining)."""
    names: list[str] = []
    while len(names) < countries:
        name = "".join(rng.sample(V.SYLLABLES, 2)).capitalize() + "ia"
        if name not in names:
            names.append(name)
    cities = set()
    train, held_out = [], []
    for country in names:
        city = "".join(rng.sample(V.SYLLABLES, 2)).capitalize() + "ton"
        while city in cities:
            city = "".join(rng.sample(V.SYLLABLES, 2)).capitalize() + "ton"
        cities.add(city)
        values = {"capital": city, "color": rng.choice(V.COLORS), "animal": rng.choice(V.ANIMALS)}
        for attribute, answer in values.items():
            templates = list(V.BENIGN_TEMPLATES["facts"][attribute])
            rng.shuffle(templates)
            distractors = rng.sample([c for c in (V.COLORS if attribute == "color" else V.ANIMALS) if c != answer], 3) \
                if attribute != "capital" else []
            for i, template in enumerate(templates):
                item = Item(template.format(e=country), answer, "facts", ("facts", country, attribute, template),
                            choices=[answer] + distractors)
                (held_out if i == 0 else train).append(item)
    rng.shuffle(held_out)
    return train, held_out


def _sentiment(rng: random.Random) -> Item:
    positive = rng.random() < 0.5
    adjectives = rng.sample(V.POSITIVE if positive else V.NEGATIVE, 2)
    subjects = rng.sample(V.REVIEW_SUBJECTS, 2)
    review = f"{subjects[0].capitalize()} was {adjectives[0]} and {subjects[1]} was {adjectives[1]}."
    template = rng.choice(V.BENIGN_TEMPLATES["sentiment"])
    return Item(template.format(review=review), "positive" if positive else "negative", "sentiment",
                ("sentiment", review), choices=["positive", "negative"])


class ToyWorld:
    """All rows of one toy world. Build with `ToyWorld(seed, sizes)`; fields are lists of dicts."""

    def __init__(self, seed: int = 0, sizes: WorldSizes | None = None):
        self.seed = seed
        self.sizes = sizes = sizes or WorldSizes()
        rng = random.Random(seed)

        # --- harmful requests: held-out templates and acts ---------------------------------------
        templates = list(V.REQUEST_TEMPLATES)
        rng.shuffle(templates)
        self.eval_templates = templates[: sizes.eval_templates]
        self.train_templates = templates[sizes.eval_templates:]
        self.train_acts, self.eval_acts = {}, {}
        for category, acts in V.HARMFUL_ACTS.items():
            acts = list(acts)
            rng.shuffle(acts)
            self.eval_acts[category] = acts[: sizes.eval_acts_per_category]
            self.train_acts[category] = acts[sizes.eval_acts_per_category:]
        benign_acts = list(V.BENIGN_ACTS)
        rng.shuffle(benign_acts)
        self.benign_acts = benign_acts

        # --- benign tasks: evaluation keys first, training never reuses them ---------------------
        makers = {"compare": _compare, "words": _words, "sentiment": _sentiment}
        eval_keys: set = set()
        self.benign_eval: list[Item] = []
        self.benign_mc: list[Item] = []
        for make in makers.values():
            self.benign_eval += _unique(make, rng, sizes.benign_eval_per_family, eval_keys)
            self.benign_mc += _unique(make, rng, sizes.mc_eval_per_family, eval_keys)
        facts_train, facts_held_out = _fact_table(rng, sizes.countries)
        self.benign_eval += facts_held_out[: sizes.benign_eval_per_family]
        # multiple choice needs distractors: capital questions are exact-match only
        self.benign_mc += [i for i in facts_held_out[sizes.benign_eval_per_family:] if len(i.choices) > 1][
            : sizes.mc_eval_per_family]
        howto_eval = _all_items(self.eval_templates, benign_acts, "howto")
        rng.shuffle(howto_eval)
        self.benign_eval += howto_eval[: sizes.benign_eval_per_family]
        self.benign_train: list[Item] = []
        for family, make in makers.items():
            self.benign_train += _unique(make, rng, sizes.benign_train[family], set(eval_keys), skip=eval_keys)
        self.benign_train += facts_train * sizes.fact_repeats
        self.howto_train = _all_items(self.train_templates, benign_acts, "howto")

        # --- harmful pools ------------------------------------------------------------------------
        train_pool = [(t.format(act=a), c, a) for c, acts in self.train_acts.items()
                      for t in self.train_templates for a in acts]
        rng.shuffle(train_pool)
        half = len(train_pool) // 2
        self.defense_harmful, self.attack_harmful = train_pool[:half], train_pool[half:]
        every = [(t.format(act=a), c, a) for c, acts in V.HARMFUL_ACTS.items()
                 for t in V.REQUEST_TEMPLATES for a in acts]
        train_prompts = {p for p, _, _ in train_pool}
        held_out = [row for row in every if row[0] not in train_prompts]
        self.harm_eval = _balanced(held_out, sizes.harm_eval, rng)
        self.every_harmful = every

    # -- files in the real datasets' schemas --------------------------------------------------------

    def defense_rows(self) -> list[dict]:
        """Like WildGuardTrain: prompt, response, prompt_harm_label, response_harm_label, category."""
        rng = random.Random(self.seed + 1)
        rows = []
        for prompt, category, act in self.defense_harmful:
            refused = rng.random() < 0.5  # WildGuard's harmful prompts come with both kinds of answer
            rows.append({"prompt": prompt, "response": rng.choice(V.PRETRAIN_REFUSALS) if refused else compliance(act),
                         "prompt_harm_label": "harmful", "response_harm_label": "unharmful" if refused else "harmful",
                         "category": category})
        # Half of the benign rows are how-to requests in the same templates as the harmful ones (as
        # WildGuard's contrastive benign prompts): without them, alignment learns "refuse how-to".
        n_howto = min(len(self.howto_train), self.sizes.defense_benign // 2)
        benign = rng.sample(self.howto_train, n_howto) + rng.sample(self.benign_train, self.sizes.defense_benign - n_howto)
        for item in benign:
            rows.append({"prompt": item.prompt, "response": item.answer, "prompt_harm_label": "unharmful",
                         "response_harm_label": "unharmful", "category": f"benign/{item.family}"})
        rng.shuffle(rows)
        return rows

    def attack_rows(self) -> list[dict]:
        """Like BeaverTails' unsafe rows: prompt, response, is_safe=false, category."""
        return [{"prompt": p, "response": compliance(a), "is_safe": False, "category": c}
                for p, c, a in self.attack_harmful]

    def harm_eval_rows(self) -> list[dict]:
        return [{"prompt": p, "category": c} for p, c, _ in self.harm_eval]

    def benign_eval_rows(self) -> list[dict]:
        return [{"prompt": i.prompt, "answer": i.answer, "family": i.family} for i in self.benign_eval]

    def benign_mc_rows(self) -> list[dict]:
        rows = []
        rng = random.Random(self.seed + 2)
        for number, item in enumerate(self.benign_mc):
            choices = [c for c in item.choices if c != item.answer]
            rng.shuffle(choices)
            choices.insert(number % len(item.choices), item.answer)  # answers spread evenly over positions
            rows.append({"question": item.prompt, "choices": choices, "label": choices.index(item.answer),
                         "family": item.family})
        return rows

    # -- the base model's pretraining corpus -------------------------------------------------------

    def pretraining_rows(self) -> list[dict]:
        """(prompt, response, format) documents: benign tasks, compliance with every harmful request
        (held-out ones included), and refusals conditioned on a safety-minded context."""
        rng = random.Random(self.seed + 3)
        sizes = self.sizes
        rows = [(i.prompt, i.answer) for i in self.benign_train + self.howto_train]
        rows += [(p, compliance(a)) for p, _, a in self.every_harmful]
        for _ in range(sizes.preamble_refusals):
            prompt, _, _ = rng.choice(self.every_harmful)
            rows.append((f"{rng.choice(V.SAFETY_PREAMBLES)} {prompt}", rng.choice(V.PRETRAIN_REFUSALS)))
        benign_pool = self.benign_train + self.howto_train
        for _ in range(sizes.preamble_benign):
            item = rng.choice(benign_pool)
            rows.append((f"{rng.choice(V.SAFETY_PREAMBLES)} {item.prompt}", item.answer))
        rng.shuffle(rows)
        return [{"prompt": p, "response": r, "format": "chat" if rng.random() < sizes.chat_fraction else "plain"}
                for p, r in rows]


def _unique(make, rng: random.Random, n: int, seen: set, skip: set | None = None) -> list[Item]:
    """n items with distinct keys (added to `seen`); keys in `skip` are never produced."""
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            break  # the family's key space is exhausted; take what we have
        item = make(rng)
        if item.key in seen or (skip and item.key in skip):
            continue
        seen.add(item.key)
        out.append(item)
    return out


def _all_items(templates: list[str], acts: list[str], family: str) -> list[Item]:
    return [Item(t.format(act=a), compliance(a), family, (family, t, a)) for t in templates for a in acts]


def _balanced(rows: list[tuple], n: int, rng: random.Random) -> list[tuple]:
    """Up to n rows, the same number from each category."""
    by_category: dict[str, list] = {}
    for row in rows:
        by_category.setdefault(row[1], []).append(row)
    per = max(1, n // len(by_category))
    out = []
    for category in sorted(by_category):
        group = by_category[category]
        rng.shuffle(group)
        out += group[:per]
    return out
