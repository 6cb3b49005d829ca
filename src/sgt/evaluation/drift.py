"""Representation drift: how far a model's harmful-prompt states are from the "safety region".

The SGT paper's claim made measurable. The safety region is where the frozen base model's hidden
states go when the trigger is inserted (the stage-2 teacher). For held-out harmful prompts we take the
state at the last prompt position (the one that predicts the first response token, where refusal vs
compliance is decided) at every transformer layer l = 1..L (hidden_states[0], the embeddings, is left
out) and report, per layer,

    relative distance(l) = mean_i ||h_i(l) - r_i(l)||^2 / mean_i ||r_i(l)||^2

(h: the model under test without trigger, r: base + trigger). Dividing by the reference's mean squared
norm keeps layers with very large activations from dominating. The base model without the trigger is
the "outside the region" level; a defended model near 0 sits in the region; an attack that moves it
back toward the base's level has moved it out.

    sgt drift --base M --trigger runs/trigger --model runs/aligned --model runs/attacked --data prompts.jsonl --out DIR
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import cfg
from ..errors import UserError


@torch.no_grad()
def at_last_prompt_position(model, tokenizer, prompts: list[str], fmt, trigger=None, batch_size: int = 32,
                            what: str = "states") -> torch.Tensor:
    """What the model computes at the last prompt position (the one that predicts the first answer token),
    trigger inserted if given: `states` (n_prompts, n_layers, hidden), hidden_states[1:], or `logprobs`
    (n_prompts, vocab), the next-token log-probabilities."""
    from ..data.collate import pad_batch

    model.eval()
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(prompts), batch_size):
        encoded = [fmt.encode(p) for p in prompts[start:start + batch_size]]
        batch = pad_batch(encoded, tokenizer.pad_token_id, side="left")  # last position = last prompt token
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        embeds = model.get_input_embeddings()(ids)
        if trigger is not None:
            embeds, mask, _ = trigger.to(device).insert(embeds, mask, batch["trigger_pos"].to(device))
        out = model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=what == "states",
                    use_cache=False, logits_to_keep=1)
        if what == "states":
            rows.append(torch.stack([h[:, -1].float().cpu() for h in out.hidden_states[1:]], dim=1))
        else:
            rows.append(torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu())
    return torch.cat(rows)


def last_prompt_states(model, tokenizer, prompts: list[str], fmt, trigger=None, batch_size: int = 32) -> torch.Tensor:
    """(n_prompts, n_layers, hidden) states at the last prompt position (trigger inserted if given)."""
    return at_last_prompt_position(model, tokenizer, prompts, fmt, trigger, batch_size, "states")


def relative_distance(states: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per layer: mean squared distance to the reference over its mean squared norm."""
    if states.shape != reference.shape:
        raise UserError(f"cannot compare states of shape {tuple(states.shape)} with the reference's "
                        f"{tuple(reference.shape)}: the models must share the architecture and the prompts")
    distance = (states - reference).pow(2).sum(-1).mean(0)
    scale = reference.pow(2).sum(-1).mean(0).clamp_min(1e-12)
    return [round(float(v), 6) for v in distance / scale]


class DriftProbe:
    """Reference states of base + trigger computed once; `measure(model)` gives a model's per-layer drift."""

    def __init__(self, base_model, tokenizer, trigger, prompts: list[str], fmt, batch_size: int = 32):
        self.tokenizer, self.prompts, self.fmt, self.batch_size = tokenizer, prompts, fmt, batch_size
        self.reference = last_prompt_states(base_model, tokenizer, prompts, fmt, trigger, batch_size)
        self.outside = self.measure(base_model)  # the base without the trigger: "outside the region"

    def measure(self, model) -> list[float]:
        states = last_prompt_states(model, self.tokenizer, self.prompts, self.fmt, None, self.batch_size)
        return relative_distance(states, self.reference)


@dataclass
class DriftSettings:
    """The experiment's `eval.drift`: measure every evaluated model's distance to the safety region."""

    trigger: str | None = cfg(None, "The name of a defense with a trigger (e.g. sgt) or a trigger folder; every "
                                    "evaluated model then gets its per-layer distance to base + trigger on harmful "
                                    "prompts (None: off).")
    n: int = cfg(64, "Harmful evaluation prompts used for the drift measurement.")


@dataclass
class TriggerProbeFields:
    """What every command that compares models with base + trigger needs (`sgt drift`, `sgt diagnose`)."""

    base: str = cfg("", "The frozen base model the trigger was learned on (the reference is base + trigger).")
    trigger: str = cfg("", "Trigger folder written by `sgt trigger` for the base model.")
    model: list[str] = cfg([], "Models to compare with base + trigger (repeat --model, or comma separated); the "
                               "base without trigger is always measured.")
    n: int | None = cfg(100, "Prompts used (per set), sampled with seed (None: all).")
    format: str = cfg("plain", "Prompt format: plain or chat (must match the trigger's).")
    max_length: int = cfg(512, "Maximum prompt tokens.")
    batch_size: int = cfg(16, "Prompts per forward pass.")
    dtype: str = cfg("auto", "Weights dtype: auto, bfloat16, float16 or float32.")
    seed: int = cfg(42, "Seed of the prompt sample.")
    trust_remote_code: bool = cfg(False, "Allow model code from the hub (off: safer).")


@dataclass
class DriftConfig(TriggerProbeFields):
    data: str = cfg("", "Held-out harmful prompts (any data source; rows labelled harmful or unlabelled).")
    split: str | None = cfg(None, "Dataset split (hub datasets).")
    out: str = cfg("", "Output folder: drift.json, drift.png, config.yaml.")


def measure_drift(config: DriftConfig) -> dict:
    """`sgt drift`: per-layer relative distance of each model to the base + trigger reference."""
    from ..config import save_config
    from ..data.formats import PromptFormat
    from ..data.sources import load_examples
    from ..models import default_device, load_model, load_tokenizer
    from ..trigger import SafetyTrigger
    from ..utils import atomic_write_json, output_dir
    from .harm import harmful_prompts

    for name in ("base", "trigger", "data", "out"):
        if not getattr(config, name):
            raise UserError(f"no --{name} given (see `sgt drift --help`)")
    from ..utils import check_output

    check_output(config.out, "drift")
    rows = harmful_prompts(load_examples(config.data, split=config.split), config.n, config.seed)
    tokenizer = load_tokenizer(config.base, config.trust_remote_code)
    base = load_model(config.base, config.dtype, config.trust_remote_code, device=default_device())
    trigger = SafetyTrigger.load(config.trigger, model=base, fmt=config.format)
    fmt = PromptFormat(tokenizer, config.format, config.max_length)
    probe = DriftProbe(base, tokenizer, trigger, [r.prompt for r in rows], fmt, config.batch_size)
    del base
    results = {"n_prompts": len(rows), "layers": list(range(1, len(probe.outside) + 1)),
               "base_without_trigger": probe.outside, "models": {}}
    for name in config.model:
        model = load_model(name, config.dtype, config.trust_remote_code, device=default_device())
        results["models"][name] = probe.measure(model)
        del model
    with output_dir(config.out, kind="drift") as work:
        atomic_write_json(work / "drift.json", results)
        plot_drift({"models": {"base (no trigger)": probe.outside, **results["models"]}}, work / "drift.png")
        save_config(config, work)
    return {k: v for k, v in results.items() if k != "layers"}


def plot_drift(panels: dict[str, dict[str, list[float]]], path) -> None:
    """One panel per group: per-layer relative distance curves (log scale), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for label, values in curves.items():
            style = dict(color="grey", linestyle="--") if "no trigger" in label else {}
            ax.plot(range(1, len(values) + 1), [max(v, 1e-6) for v in values], label=label, linewidth=1.4, **style)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("relative distance to base + trigger")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
