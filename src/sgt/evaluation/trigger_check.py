"""The trigger before anything is aligned to it: does the frozen base refuse with it, and only then?

Stage 2 can at best copy its teacher (the frozen base WITH the trigger), so every study reports, for each
defense that learns a trigger, the base's refusal rate without and with the trigger on
  validation  held-out harmful prompts for choosing settings (the experiment's data.harm_val)
  evaluation  the held-out harmful evaluation prompts (the same sample as the harm evaluation)
  benign      the benign evaluation prompts (a trigger trained on harmful prompts only may refuse them too)
plus how stage 1 trained (its loss curve, its validation curve and the step that was kept).
"""

from __future__ import annotations

from pathlib import Path

TRAINING_KEYS = ("steps", "kept_step", "first_loss", "last_loss", "component_history", "validation_curve",
                 "refusal_rate_no_trigger", "refusal_rate_initial_trigger", "refusal_rate_trigger")


def trigger_check(base, tokenizer, trigger_dir: Path, sets: dict[str, list[str]], fmt, max_new_tokens: int,
                  batch_size: int) -> dict:
    """{"sets": {name: {n, without, with}}, "training": stage 1's curves}; the base is loaded by the caller."""
    from ..refusal import refusal_rate
    from ..trigger import SafetyTrigger
    from ..utils import read_json

    trigger = SafetyTrigger.load(trigger_dir, model=base, fmt=fmt.kind)
    result = {"sets": {}}
    for name, prompts in sets.items():
        if not prompts:
            continue
        without, _ = refusal_rate(base, tokenizer, prompts, fmt, None, max_new_tokens, batch_size)
        with_trigger, _ = refusal_rate(base, tokenizer, prompts, fmt, trigger, max_new_tokens, batch_size)
        result["sets"][name] = {"n": len(prompts), "without": round(without, 4), "with": round(with_trigger, 4)}
    metrics_file = Path(trigger_dir) / "metrics.json"
    metrics = read_json(metrics_file) if metrics_file.is_file() else {}
    result["training"] = {k: metrics[k] for k in TRAINING_KEYS if k in metrics}
    return result


def trigger_table(checks: dict[str, dict]) -> list[str]:
    """Markdown lines: one row per defense with a trigger (refusal without -> with, per set)."""
    sets = sorted({s for c in checks.values() for s in c["sets"]}, key=["validation", "evaluation", "benign"].index)
    lines = ["| defense | stage-1 steps (kept) | loss first -> last | "
             + " | ".join(f"{s}: refusal without -> with trigger" for s in sets) + " |",
             "|---|---|---|" + "---|" * len(sets)]
    for name, check in checks.items():
        t = check["training"]
        loss = (f"{t['first_loss']:.2f} -> {t['last_loss']:.2f}" if t.get("first_loss") is not None
                and t.get("last_loss") is not None else "n/a")
        steps = f"{t.get('steps', 'n/a')} ({t.get('kept_step', t.get('steps', 'n/a'))})"
        cells = [f"{c['without']:.2f} -> **{c['with']:.2f}** (n {c['n']})" if (c := check["sets"].get(s)) else "n/a"
                 for s in sets]
        lines.append(f"| {name} | {steps} | {loss} | " + " | ".join(cells) + " |")
    return lines


def plot_trigger_training(checks: dict[str, dict], path: Path) -> str | None:
    """Stage 1's loss and validation refusal rate against the step, one line per defense."""
    curves = {n: c["training"] for n, c in checks.items() if c["training"].get("component_history")}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, rate_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, t in curves.items():
        logged = [r for r in t["component_history"] if "loss" in r]
        loss_ax.plot([r["step"] for r in logged], [r["loss"] for r in logged], label=name)
        if t.get("validation_curve"):
            rate_ax.plot([p["step"] for p in t["validation_curve"]], [p["refusal_rate"] for p in t["validation_curve"]],
                         marker="o", markersize=3, label=name)
    loss_ax.set(xlabel="step", ylabel="stage-1 loss", title="trigger: training loss")
    rate_ax.set(xlabel="step", ylabel="refusal rate", title="trigger: held-out refusal (validation)", ylim=(-0.02, 1.02))
    for ax in (loss_ax, rate_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name
