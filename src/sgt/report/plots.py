"""The report's plots: harm vs budget, benign capability, harm vs examples seen, the searched attacker."""

from __future__ import annotations

from pathlib import Path

from .numbers import _mean


def plot(data: dict, out: Path, settings) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    settings_list = sorted({row["setting"] for d in data.values() for row in d["attacked"]})
    if settings_list:
        # Every curve starts at 0 examples, the defended model at release; the budgets are evenly spaced
        # categories (a log axis cannot show 0). Error bars: 95 % intervals.
        budgets = [0] + sorted({row["shots"] for d in data.values() for row in d["attacked"]})
        position = {b: i for i, b in enumerate(budgets)}
        panels = 1 + len(settings_list)
        fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.9), sharey=True, squeeze=False)
        axes = axes[0]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        markers = "osD^vP*X"
        for i, (name, d) in enumerate(data.items()):
            # decreasing marker sizes and small sideways offsets keep overlapping curves (e.g. all at 1.0) visible
            style = dict(color=colors[i % len(colors)], marker=markers[i % len(markers)], markersize=8 - 1.5 * (i % 4))
            shift = 0.06 * (i - (len(data) - 1) / 2)
            defended = d["defended"] or {}
            start = [(0, defended["harmful_rate"], (defended.get("intervals") or {}).get("harmful_rate"))] \
                if defended.get("harmful_rate") is not None else []
            intervals = d.get("worst_case_intervals") or {}
            worst = [(b, v, intervals.get(b)) for b, v in sorted(d["worst_case"].items())]
            _curve(axes[0], start + worst, position, shift, linewidth=2, label=name, **style)
            bounded = sorted(d["worst_case_capability_bounded"].items())
            if bounded:
                points = [(b, v, None) for b, v, _ in start] + [(b, v, None) for b, v in bounded]
                _curve(axes[0], points, position, shift, linewidth=1, linestyle="--", alpha=0.7, **style)
            for ax, setting in zip(axes[1:], settings_list):
                points = sorted((r["shots"], r["harmful_rate"], (r.get("intervals") or {}).get("harmful_rate"))
                                for r in d["attacked"] if r["setting"] == setting and r["harmful_rate"] is not None)
                if points:
                    _curve(ax, start + points, position, shift, linewidth=1.6, **style)
        titles = ["worst case over settings\n(dashed: capability-bounded)"] + settings_list
        for ax, title in zip(axes, titles):
            ax.set_xticks(range(len(budgets)), ["0\n(release)"] + [str(b) for b in budgets[1:]])
            ax.set_xlabel("attacker budget (examples)")
            ax.axhline(settings.break_threshold, color="grey", linestyle=":", linewidth=1)
            ax.set_title(title, fontsize=9)
            ax.set_ylim(-0.03, 1.05)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("harmful rate (95 % interval)")
        axes[0].legend(loc="best", fontsize=8)  # the corner that hides the fewest points
        fig.tight_layout()
        files.append(_save(fig, out / "harm_vs_budget.png"))
        plt.close(fig)
    scores = {n: d for n, d in data.items() if (d["defended"] or {}).get("benign_score") is not None}
    if scores:
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        names = list(scores)
        before = [scores[n]["defended"]["benign_score"] for n in names]
        after = [[r["benign_score"] for r in scores[n]["attacked"] if r["benign_score"] is not None] for n in names]
        width = 0.27
        xs = range(len(names))
        errors = [_error_bar(scores[n]["defended"]["benign_score"], (scores[n]["defended"].get("intervals") or {})
                             .get("benign_score")) for n in names]
        ax.bar([x - width for x in xs], before, width, label="defended (no attack, 95 % interval)",
               yerr=list(zip(*errors)) if any(e != (0, 0) for e in errors) else None, capsize=3)
        ax.bar(list(xs), [_mean(a) if a else 0 for a in after], width, label="after attack (mean)")
        ax.bar([x + width for x in xs], [min(a) if a else 0 for a in after], width, label="after attack (min)")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("benign score")
        ax.set_ylim(0, 1.05)
        ax.set_title("benign capability before and after attack", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        files.append(_save(fig, out / "benign.png"))
        plt.close(fig)
    return files


def _error_bar(value: float, interval: dict | None) -> tuple[float, float]:
    """(below, above) `value` of its interval, for matplotlib's yerr; (0, 0) without one."""
    if not interval:
        return (0.0, 0.0)
    return (max(0.0, value - interval["low"]), max(0.0, interval["high"] - value))


def _curve(ax, points: list[tuple], position: dict, shift: float, **style) -> None:
    """Harmful rate against budget: points (budget, rate, interval or None), drawn with error bars."""
    if not points:
        return
    xs = [position[b] + shift for b, _, _ in points]
    ys = [v for _, v, _ in points]
    errors = [_error_bar(v, ci) for _, v, ci in points]
    yerr = list(zip(*errors)) if any(e != (0, 0) for e in errors) else None
    ax.errorbar(xs, ys, yerr=yerr, capsize=2, elinewidth=0.8, **style)


def plot_curves(data: dict, path: Path) -> str:
    """Harmful rate against training examples seen (intermediate checkpoints), one panel per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in data.items() if any(row.get("curve") for row in d["attacked"])]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for row in data[name]["attacked"]:
            if row.get("curve"):
                points = [(0, data[name]["defended"]["harmful_rate"])] if data[name]["defended"] else []
                points += [(p["examples"], p["harmful_rate"]) for p in row["curve"]]
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=f"{row['shots']} shots, {row['setting']}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training examples seen")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("harmful rate")
    fig.tight_layout()
    name = _save(fig, path)
    plt.close(fig)
    return name



def plot_searches(searches: dict, path: Path) -> str:
    """Best objective so far against trials, one line per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, found in searches.items():
        curve = found.get("best_so_far") or []
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("best harmful rate so far\n(minus 1 if capability was lost)")
    ax.set_title("searched attacker", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = _save(fig, path)
    plt.close(fig)
    return name


def _save(fig, path: Path) -> str:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path.name
