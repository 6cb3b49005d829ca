"""The plan as text: what `sgt run --dry-run` prints (and every run logs before it starts)."""

from __future__ import annotations


def describe(experiment, gpu_memory: float | None = None) -> str:
    """The plan as text; with `gpu_memory` (GiB) also the memory plan of every training stage."""
    r, out = experiment.resolved, experiment.out
    lines = [f"experiment {r.name!r} -> {out}"]
    if experiment.world:
        from ..worlds import WORLD_FILE

        w = r.world
        state = "built" if (experiment.world / WORLD_FILE).is_file() else "will be built"
        base = f" base={w.base_model}" if w.base_model else ""
        lines.append(f"  world: kind={w.kind} preset={w.preset} seed={w.seed}{base} at {experiment.world} ({state})")
    lines.append(f"  base model: {r.model}  (format={r.format}, dtype={r.dtype})")
    lines.append(f"  launcher: {' '.join(r.launcher) if r.launcher else 'in-process'}")
    for key in ("defense", "attack", "harm_eval"):
        d = getattr(r.data, key)
        lines.append(f"  data.{key}: {d.data}" + (f" (split={d.split})" if d.split else ""))
    h, b = r.eval.harm, r.eval.benign
    lines.append(f"  evaluation: judge={h.judge} {h.judge_options or ''}, n={h.n}, max_new_tokens={h.max_new_tokens}; "
                 f"benign: exact_match={b.exact_match}, tasks={b.tasks or '-'}; drift: {r.eval.drift.trigger or 'off'}")
    lines.append("  defenses:")
    for defense in experiment.defenses:
        lines.append(f"    - {defense.name}: {defense.summary}" + ("" if defense.attacked else " (not attacked)"))
    g, cells = r.attack, experiment.cells
    lines.append(f"  attack grid: {len(cells)} cells per defense = kind {g.kind} x shots {g.shots} x lr "
                 f"{g.lr} x epochs {g.epochs} x lora {g.lora} x seeds {g.seeds}"
                 + "".join(f" + {part}" for part in g.extra))
    if g.search.trials:
        lines.append(f"  searched attacker: {g.search.trials} trials per defense at a budget of {g.search.shots} "
                     f"examples (lr {g.search.lr}, epochs {g.search.epochs}, batch {g.search.batch_size}, "
                     f"LoRA {g.search.lora})")
    total = sum(1 + len(cells) * d.attacked for d in experiment.defenses)
    done = len(list(out.glob("defenses/*/result.json")) + list(out.glob("attacks/*/*/result.json")))
    lines.append(f"  evaluations: {total} ({done} already done)")
    if gpu_memory is not None:
        from ..memory_plan import plan_text

        lines.append(plan_text(experiment, gpu_memory))
    return "\n".join(lines)
