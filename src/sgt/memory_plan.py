"""The memory plan `sgt run CONFIG --dry-run [--gpu-memory 80]` prints: how much GPU memory every training
stage of an experiment needs per process, under the experiment's launcher, and on how many GPUs it fits.

Per stage (stage 1, stage 2, the sft defense, each trained baseline, each attack setting) it counts:
  weights      every parameter in the stage's dtype (`auto`: bf16, as on a CUDA GPU)
  gradients    one per trainable parameter
  AdamW        two states per trainable parameter, in that parameter's dtype
  teacher      stage 2 with full fine-tuning: a frozen copy of the model on every process (not sharded;
               with LoRA the teacher is the same weights with the adapters disabled: nothing)
  logits       and activations: see ACTIVATIONS (the assumptions)
Under the launcher (the accelerate config named by `launcher:`): DDP replicates everything on every
process and keeps a second copy of the gradients in its all-reduce buckets; FSDP (FULL_SHARD) shards
weights, gradients and AdamW over the processes, holds its trainable shards in float32 under bf16
mixed precision (accelerate upcasts them), and keeps the root unit (embeddings, LM head) and two decoder
layers unsharded while they compute. Trainable parameters: all (full fine-tuning), the LoRA matrices
(r x (in + out) per adapted Linear, float32 as PEFT creates them) or the trigger vectors (stage 1).

Model shapes come from the model's config.json (a local folder, or the Hugging Face cache: never the
network), instantiated on the meta device to count parameters exactly; for the paper's models a small
table of their architecture numbers is used when the config cannot be read, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .model_shapes import KNOWN_SHAPES, ModelShape, model_shape  # noqa: F401  (also imported from here)

GiB = 2 ** 30
RESERVE_GIB = 2.0  # per GPU: the CUDA context and the allocator's fragmentation

ACTIVATIONS = (
    "Assumed: every row padded to max_length (tokens = batch_size x max_length per process); a Llama-style "
    "decoder layer (RMSNorm, attention through SDPA/flash kernels that keep no length x length matrix, SwiGLU "
    "MLP, no dropout) keeps 7h + 2kv + 4i values per token for the backward pass (h hidden size, kv key/value "
    "width, i MLP width), in the compute dtype; with gradient checkpointing it keeps each layer's input "
    "(h per token per layer) plus one layer recomputed at a time. Logits: tokens x vocabulary in the compute "
    "dtype plus the loss's float32 copy and float32 log-softmax. Stage 1 keeps 1 + noise_draws forward "
    "passes for the backward; stage 2 adds the teacher's hidden states and the float32 per-layer distances; "
    "the trained baselines are counted with all three data streams (refusal, harmful, benign) held at once "
    "(an upper bound). Not counted: temporary buffers of single kernels, the evaluation's KV cache.")

@dataclass
class Launch:
    """How a training stage is started: one process, DDP or FSDP over `processes` processes."""

    kind: str                   # "one process", "DDP" or "FSDP"
    processes: int = 1
    shards_weights: bool = True  # FSDP FULL_SHARD (weights too) vs SHARD_GRAD_OP (gradients and AdamW only)
    mixed_precision: str = "no"
    source: str = ""

    def describe(self) -> str:
        if self.kind == "one process":
            return "one process (in-process stages)"
        what = "shards weights, gradients and AdamW" if self.shards_weights else "shards gradients and AdamW"
        what = what if self.kind == "FSDP" else "replicates the model on every process"
        return f"{self.kind} over {self.processes} processes ({self.source}; {what}), mixed precision {self.mixed_precision}"


def parse_launcher(launcher: list[str]) -> Launch:
    """The layout a `launcher:` list gives: accelerate's config file (overridden by its flags) or torchrun."""
    import yaml

    if not launcher:
        return Launch("one process")
    flags = _flags(launcher)
    if "config_file" in flags:
        path = Path(flags["config_file"])
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        kind = {"FSDP": "FSDP", "NO": "one process"}.get(settings.get("distributed_type", ""), "DDP")
        strategy = str((settings.get("fsdp_config") or {}).get("fsdp_sharding_strategy", "FULL_SHARD"))
        processes = int(flags.get("num_processes", settings.get("num_processes", 1)))
        return Launch(kind if processes > 1 else "one process", processes, strategy != "SHARD_GRAD_OP",
                      str(flags.get("mixed_precision", settings.get("mixed_precision", "no"))),
                      str(path) + ("" if path.is_file() else ", not found"))
    processes = int(flags.get("nproc_per_node", flags.get("num_processes", 1)))
    return Launch("DDP" if processes > 1 else "one process", processes, source=" ".join(launcher[:2]))


def _flags(argv: list[str]) -> dict[str, str]:
    """The option pairs of a command line (an option followed by its value, or option=value), names with - as _."""
    flags = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            if not value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            flags[name.replace("-", "_")] = value
    return flags


@dataclass
class Stage:
    """One training stage: its settings (an OptimFields config) and what kind of training it is."""

    label: str
    config: object
    kind: str = "finetune"       # finetune | trigger | align | streams (the baselines' three data streams)
    one_process: bool = False    # trains in one process whatever the launcher


# ---------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype in ("float32", "fp32") else 2  # auto: bf16 on a CUDA GPU


def trained(shape: ModelShape, stage: Stage, w: int, fsdp_mixed: bool) -> tuple[int, int, bool]:
    """(trainable parameters, bytes of each of their values, whether they train next to a frozen model)."""
    c = stage.config
    if stage.kind == "trigger":  # the model is frozen; the trigger vectors train in float32
        return (1 if c.tied else c.length) * shape.hidden, 4, True
    if getattr(c, "lora", False):  # PEFT makes the LoRA matrices float32
        return shape.lora_parameters(c.lora_r, c.lora_targets), 4, True
    # accelerate upcasts FSDP's trainable 16-bit shards to float32 under mixed precision
    return shape.parameters, 4 if fsdp_mixed else w, False


def activation_bytes(shape: ModelShape, stage: Stage, w: int) -> tuple[float, float, float]:
    """(logits, activations with gradient checkpointing, without) per process: see ACTIVATIONS."""
    c = stage.config
    passes = 1  # forward passes whose graph is held for one backward
    if stage.kind == "trigger" and c.consistency_weight:
        passes += c.noise_draws
    elif stage.kind == "streams":
        passes = 3
    tokens = c.batch_size * c.max_length * passes
    logits = tokens * shape.vocab * (w + 8)
    per_layer = 7 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate
    checkpointed = tokens * ((shape.layers + 1) * shape.hidden + per_layer) * w
    full = tokens * (shape.layers * per_layer + shape.hidden) * w
    if stage.kind == "align":  # the teacher's states (compute dtype) and float32 distances, every layer
        extra = c.batch_size * c.max_length * shape.layers * shape.hidden * (w + 4)
        checkpointed, full = checkpointed + extra, full + extra
    return logits, checkpointed, full


def stage_memory(shape: ModelShape, stage: Stage, launch: Launch, processes: int | None = None) -> dict[str, float]:
    """Bytes per process of `stage` on `shape` under `launch` (over `processes` processes, default the
    launch's): weights, gradients, adamw, teacher, logits, activations (as configured) and
    activations_other (with the other gradient-checkpointing setting)."""
    c = stage.config
    n = 1 if stage.one_process or launch.kind == "one process" else (processes or launch.processes)
    fsdp = launch.kind == "FSDP" and not stage.one_process  # on one GPU too: FSDP's float32 shards
    w = dtype_bytes(c.dtype)
    trainable, state, added = trained(shape, stage, w, fsdp and launch.mixed_precision != "no")
    weights = (shape.parameters * w if added else 0) + trainable * state
    if fsdp:  # the shards, plus the root unit and two decoder layers gathered while they compute
        working = (shape.parameters - shape.layers * shape.layer_parameters + 2 * shape.layer_parameters) * w
        weights = (weights / n if launch.shards_weights else weights) + working
    logits, checkpointed, full = activation_bytes(shape, stage, w)
    on, off = (checkpointed, full) if c.gradient_checkpointing else (full, checkpointed)
    return {"weights": weights,
            "gradients": trainable * state * (1 / n if fsdp else 2 if n > 1 else 1),  # DDP: + its buckets
            "adamw": 2 * trainable * state / (n if fsdp else 1),
            "teacher": shape.parameters * w if stage.kind == "align" and not c.lora else 0,
            "logits": logits, "activations": on, "activations_other": off}


def total(memory: dict[str, float]) -> float:
    return sum(v for k, v in memory.items() if k != "activations_other")


def gpus_needed(shape: ModelShape, stage: Stage, launch: Launch, gpu_gib: float) -> int | None:
    """The fewest GPUs of `gpu_gib` GiB on which the stage fits (one per process); None: it fits on none.
    FSDP spreads the sharded part over more GPUs; one process or DDP needs it all on each."""
    budget = (gpu_gib - RESERVE_GIB) * GiB
    if launch.kind != "FSDP" or stage.one_process:
        return 1 if total(stage_memory(shape, stage, launch)) <= budget else None
    for n in range(1, 1025):
        if total(stage_memory(shape, stage, launch, processes=n)) <= budget:
            return n
    return None


# ---------------------------------------------------------------------------------------------
# The experiment's plan
# ---------------------------------------------------------------------------------------------


def experiment_stages(experiment) -> list[Stage]:
    """Every training stage an experiment runs: each defense's stage configs, then each distinct attack
    setting (full / LoRA) of the grid and of the searched attacker."""
    from types import SimpleNamespace

    from .methods.align import AlignConfig
    from .methods.defend import DefenseTrainingConfig, GradientDefenseTrainer
    from .methods.trigger import TriggerConfig
    from .training import OptimFields

    stages = []
    for defense in experiment.defenses:
        settings = defense.settings  # a stage config itself (sft, the baselines) or one per stage (sgt)
        configs = [("settings", settings)] if isinstance(settings, OptimFields) else \
            [(name, value) for name, value in vars(settings).items() if isinstance(value, OptimFields)]
        for name, config in configs:
            if isinstance(config, TriggerConfig) and getattr(getattr(defense, "align", None), "trigger", ""):
                continue  # the trigger comes from a file: no stage 1
            kind = ("trigger" if isinstance(config, TriggerConfig) else
                    "streams" if isinstance(config, DefenseTrainingConfig) else
                    "align" if isinstance(config, AlignConfig) else "finetune")
            trainer = getattr(defense, "trainer_class", None)
            # gradients taken by hand (some baselines, stage 2's simulated attack) need one process
            one = bool(trainer) and issubclass(trainer, GradientDefenseTrainer) or getattr(config, "attack_steps", 0) > 0
            label = defense.name + (f" {kind if kind in ('trigger', 'align') else name}" if len(configs) > 1 else "")
            stages.append(Stage(label, config, kind, one_process=one))
    r = experiment.resolved
    attacks = [(cell.kind, cell.lora, {}) for cell in experiment.cells]
    if r.attack.search.trials:  # the searched attacker's largest batch and rank
        search = r.attack.search
        attacks += [(search.kind, lora, {"batch_size": max(search.batch_size), "lora_r": max(search.lora_r)})
                    for lora in search.lora]
    seen = set()
    for kind, lora, extra in attacks:
        attack = experiment.make_attack(kind, extra) if extra else experiment.attacks.get(kind)
        if attack is None or not hasattr(attack, "config"):
            continue
        cell = SimpleNamespace(shots=1, lr=1e-5, epochs=1.0, lora=lora, seed=0)  # sizes do not depend on these
        config = attack.config(".", cell, Path("."))
        key = (config.batch_size, config.max_length, config.gradient_checkpointing, lora, config.lora_r)
        if key not in seen:
            seen.add(key)
            searched = "searched attacker" if extra else "attack"
            stages.append(Stage(f"{searched} ({'LoRA' if lora else 'full'}, batch {config.batch_size})", config))
    return stages


def gpu_gib_value(text: str) -> float:
    """`--gpu-memory` as a number of GiB larger than what is kept per GPU (argparse type: one-line error)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= RESERVE_GIB:
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU size: give GiB above {RESERVE_GIB:g}, e.g. 80")
    return value


def plan_text(experiment, gpu_gib: float = 80.0) -> str:
    """The memory plan as the lines `sgt run --dry-run` prints (never fails: it says why it has no plan)."""
    r = experiment.resolved
    shape = model_shape(r.model)
    if isinstance(shape, str):
        return f"  memory plan: not available for {r.model}: {shape}"
    launch = parse_launcher(list(r.launcher))
    stages = experiment_stages(experiment)
    dtype = "bf16 (auto: as on a CUDA GPU)" if r.dtype == "auto" else r.dtype
    memories = [stage_memory(shape, stage, launch) for stage in stages]
    unit, unit_name = (GiB, "GiB") if max(map(total, memories), default=0) >= GiB else (2 ** 20, "MiB")
    lines = [f"  memory plan per process ({unit_name}) for GPUs of {gpu_gib:g} GiB ({RESERVE_GIB:g} GiB each kept for "
             "the CUDA context; --gpu-memory to change):",
             f"    model {r.model}: {_count(shape.parameters)} parameters, {shape.layers} layers, hidden "
             f"{shape.hidden}, vocabulary {shape.vocab}, {dtype} (shapes: {shape.source})",
             f"    launcher: {launch.describe()}",
             f"    {'stage':<34}{'weights':>8}{'grads':>7}{'AdamW':>7}{'teacher':>8}{'logits':>7}"
             f"{'GC':>4}{'activations':>12}{'(GC flipped)':>13}{'total':>8}  GPUs needed"]
    needed = []
    for stage, memory in zip(stages, memories):
        count = gpus_needed(shape, stage, launch, gpu_gib)
        needed.append((count, stage.label))
        gc = "on" if stage.config.gradient_checkpointing else "off"
        cells = "".join(f"{memory[k] / unit:>{width}.1f}" if memory[k] else f"{'-':>{width}}"
                        for k, width in (("weights", 8), ("gradients", 7), ("adamw", 7), ("teacher", 8), ("logits", 7)))
        lines.append(f"    {stage.label[:33]:<34}{cells}{gc:>4}{memory['activations'] / unit:>12.1f}"
                     f"{memory['activations_other'] / unit:>13.1f}{total(memory) / unit:>8.1f}  "
                     + _count_text(count, stage, launch))
    if not stages:
        lines.append("    (no training stages)")
    else:
        lines.append("    " + _summary(needed, launch, gpu_gib))
    lines.append(f"    {ACTIVATIONS}")
    return "\n".join(lines)


def _count(n: int) -> str:
    return next(f"{n / size:.3g} {name}" for size, name in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")) if n >= size)


def _count_text(count: int | None, stage: Stage, launch: Launch) -> str:
    if count is None:
        return "does not fit" + (" (runs in one process)" if stage.one_process else "")
    if stage.one_process and launch.kind != "one process":
        return f"{count} (runs in one process)"
    return f"{count}" + (" per process" if launch.kind == "DDP" else "")


def _summary(needed: list[tuple[int | None, str]], launch: Launch, gpu_gib: float) -> str:
    too_big = [label for count, label in needed if count is None]
    if too_big:
        fsdp = "" if launch.kind == "FSDP" else ", or FSDP (configs/accelerate/fsdp.yaml)"
        return (f"does not fit on GPUs of {gpu_gib:g} GiB: {', '.join(too_big)} (try gradient_checkpointing, "
                f"a smaller batch_size or max_length, LoRA{fsdp})")
    count, label = max(needed, key=lambda item: item[0])
    if launch.kind == "FSDP":
        verdict = "enough" if launch.processes >= count else "too few: raise num_processes"
        return (f"needs {count} GPU(s) of {gpu_gib:g} GiB (the largest stage: {label}); the launcher starts "
                f"{launch.processes} processes, one per GPU: {verdict}")
    per = f", one per process ({launch.processes} processes)" if launch.kind == "DDP" else ""
    return f"every stage fits on one GPU of {gpu_gib:g} GiB{per}"

