"""Build the toy world: data files in the real datasets' schemas, a tokenizer, and a tiny
Llama-architecture base model "pretrained" on the world (it does the benign tasks and complies with
harmful requests, except after a safety-minded context). Cached: a second call returns at once.

    sgt world build --kind toy --preset small --seed 0 --out toy/small

Layout of the output folder:
    data/defense_train.jsonl  WildGuardTrain-like (stages 1-2 and the sft defense)
    data/attack_train.jsonl   BeaverTails-like harmful QA (the attacker's data)
    data/harm_eval.jsonl      held-out harmful prompts (other templates / acts)
    data/benign_eval.jsonl    held-out benign prompt/answer pairs (exact match)
    data/benign_mc.jsonl      held-out multiple-choice questions; tasks/toy_mc.yaml for lm-eval
    base/                     the base model + tokenizer (save_pretrained, safetensors)
    world.json                preset, seed, sizes, timings and the base model's measured quality
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...utils import write_jsonl
from .. import WORLD_KINDS, write_mc_task
from .world import ToyWorld, WorldSizes

VERSION = 5  # bump when generation or training changes, so caches rebuild
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class ToyPreset:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    epochs: float
    lr: float
    batch_size: int
    sizes: WorldSizes = field(default_factory=WorldSizes)


PRESETS = {
    # For tests: small enough to pretrain in well under a minute on 2 CPU cores.
    "micro": ToyPreset(hidden=64, layers=2, heads=4, intermediate=192, vocab_size=2048, epochs=6, lr=3e-3,
                       batch_size=32, sizes=WorldSizes(benign_train={"compare": 600, "words": 500, "sentiment": 150},
                                                       countries=20, fact_repeats=3, benign_eval_per_family=10,
                                                       mc_eval_per_family=8, harm_eval=64, preamble_refusals=300,
                                                       preamble_benign=200, defense_benign=120)),
    # The demo's world: meets the quality targets in a few minutes on a laptop.
    "small": ToyPreset(hidden=128, layers=4, heads=4, intermediate=384, vocab_size=2048, epochs=8, lr=2e-3,
                       batch_size=32),
}


DEFAULT_BASE = None  # the toy world trains its own base


def build_toy_world(out: str | Path, preset: str = "small", seed: int = 0, force: bool = False,
                    progress: bool = True) -> dict:
    """Build (or reuse) the toy world in `out`; returns its manifest (see sgt.worlds.build_world)."""
    from .. import WorldConfig, build_world

    return build_world(WorldConfig(kind="toy", preset=preset, seed=seed, out=str(out), force=force, progress=progress))


def build(work: Path, final: Path, config, log) -> dict:
    """Write the toy world into `work` (renamed to `final` when complete); returns the manifest body."""
    spec = PRESETS[config.preset]
    world = ToyWorld(config.seed, spec.sizes)
    _write_data(world, work, final=final)
    log("data files written; training the tokenizer")
    tokenizer = train_tokenizer(world, spec.vocab_size)
    model = _new_model(tokenizer, spec, config.seed)
    log(f"pretraining the base model ({spec.epochs:g} epochs; the longest phase)")
    pretrain_metrics = _pretrain(model, tokenizer, world, spec, config.seed, work, config.progress)
    model.save_pretrained(str(work / "base"), safe_serialization=True)
    tokenizer.save_pretrained(str(work / "base"))
    log("measuring the base model on the held-out sets")
    quality = measure_base(model, tokenizer, work, config.progress)
    return {"model": {k: v for k, v in asdict(spec).items() if k != "sizes"},
            "parameters": sum(p.numel() for p in model.parameters()),
            "sizes": asdict(spec.sizes), "pretraining": pretrain_metrics, "quality": quality}


# ---------------------------------------------------------------------------------------------
# Data files
# ---------------------------------------------------------------------------------------------


def _write_data(world: ToyWorld, work: Path, final: Path) -> None:
    data = work / "data"
    write_jsonl(data / "defense_train.jsonl", world.defense_rows())
    write_jsonl(data / "attack_train.jsonl", world.attack_rows())
    write_jsonl(data / "harm_eval.jsonl", world.harm_eval_rows())
    write_jsonl(data / "benign_eval.jsonl", world.benign_eval_rows())
    write_jsonl(data / "benign_mc.jsonl", world.benign_mc_rows())
    write_mc_task(work / "tasks" / "toy_mc.yaml", "toy_mc", final / "data" / "benign_mc.jsonl",
                  "User: {{question}}\\nAssistant:")


# ---------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------


def train_tokenizer(world: ToyWorld, vocab_size: int, split_digits: bool = False):
    """A byte-level BPE tokenizer trained on every text of the world (common words become one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from ...data.formats import PLAIN_ANCHOR, PLAIN_ASSISTANT
    from .vocabulary import PRETRAIN_REFUSALS

    texts = [f"{PLAIN_ANCHOR} {r['prompt']}{PLAIN_ASSISTANT} {r['response']}" for r in world.pretraining_rows()]
    texts += [r["prompt"] for r in world.harm_eval_rows() + world.benign_eval_rows()]
    texts += [" ".join(r["choices"]) + " " + r["question"] for r in world.benign_mc_rows()]
    texts += PRETRAIN_REFUSALS
    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                          if split_digits else byte_level)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                        special_tokens=[("<s>", core.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[3:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 256
    return tokenizer


def _new_model(tokenizer, spec: ToyPreset, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Chat turns end with <|end|>: generation stops there as well as at </s>.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _pretrain(model, tokenizer, world: ToyWorld, spec: ToyPreset, seed: int, work: Path, progress: bool) -> dict:
    from ...data.formats import PromptFormat
    from ...training import EncodedDataset, OptimFields, train_rows

    # Loss on the answers only: the prompts are random draws (numbers, words) that no model can
    # predict, and concentrating a laptop's compute on behaviour is what makes the base useful.
    formats = {kind: PromptFormat(tokenizer, kind, max_length=256) for kind in ("plain", "chat")}
    rows = [formats[row["format"]].encode(row["prompt"], row["response"]).as_dict() for row in world.pretraining_rows()]
    optim = OptimFields(lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, max_length=256,
                        scheduler="cosine", warmup_ratio=0.03, weight_decay=0.01, seed=seed,
                        dtype="float32", logging_steps=50, progress=progress)
    result = train_rows(model, tokenizer, EncodedDataset(rows), optim, work)
    metrics = result["metrics"]
    return {"documents": len(rows), "steps": metrics["steps"], "seconds": metrics["seconds"],
            "first_loss": metrics["first_loss"], "last_loss": metrics["last_loss"]}


def measure_base(model, tokenizer, folder: Path, progress: bool = False) -> dict:
    """The base model's held-out quality: benign exact match and harmful compliance (both formats)."""
    from ...data.formats import PromptFormat
    from ...data.sources import read_local_rows
    from ...evaluation.benign import exact_match
    from ...generation import generate
    from ...judges.keyword import KeywordJudge

    benign = read_local_rows(folder / "data" / "benign_eval.jsonl")
    harmful = [r["prompt"] for r in read_local_rows(folder / "data" / "harm_eval.jsonl")]
    judge = KeywordJudge()
    quality = {}
    for kind in ("plain", "chat"):
        fmt = PromptFormat(tokenizer, kind, max_length=256)
        em = exact_match(model, tokenizer, [r["prompt"] for r in benign], [r["answer"] for r in benign], fmt)
        responses = generate(model, tokenizer, harmful, fmt, batch_size=64, max_new_tokens=48)
        judged = judge.judge(list(zip(harmful, responses)))
        per_family: dict[str, list[bool]] = {}
        for r, row in zip(em["rows"], benign):
            per_family.setdefault(row["family"], []).append(r["correct"])
        quality[kind] = {
            "benign_exact_match": round(em["accuracy"], 4),
            "benign_by_family": {f: round(sum(v) / len(v), 4) for f, v in per_family.items()},
            "harmful_compliance": round(sum(j.harmful for j in judged) / len(judged), 4),
            "n_benign": len(benign), "n_harmful": len(harmful),
        }
    return quality


WORLD_KINDS.register(sys.modules[__name__], name="toy")
