"""README blocks (what `make demo` and `make real` refresh): a run's numbers as the report's tables, and
its plots."""

from __future__ import annotations

from pathlib import Path

from ..utils import atomic_write_text, read_json
from .markdown import readme_tables
from .numbers import drift_outside, drift_panels, load_results


def _shown(path: Path, readme: Path) -> str:
    """`path` as a reader of the README finds it: relative to the README's folder when inside it."""
    try:
        return path.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        return path.as_posix()


def timing_text(run: dict) -> str:
    """How long the run took, honestly: summed over its invocations, and whether the world's build is in it."""
    wall, invocations = run.get("wall_seconds"), run.get("invocations") or []
    if not wall:
        return "wall time n/a"
    text = f"wall time {wall / 60:.1f} min" + (f" over {len(invocations)} invocations" if len(invocations) > 1 else "")
    worlds = {i.get("world") for i in invocations}
    build = run.get("world_build_seconds")
    if "built" in worlds:
        text += " (world build included)"
    elif "cached" in worlds and build:
        text += f" (world reused from the cache; building it took {build / 60:.1f} min more)"
    return text


def update_readme(run_dir: str | Path, config, readme: str | Path, assets: str | Path, block: str = "demo-results",
                  command: str = "make demo") -> None:
    """Replace the README's `<!-- BLOCK:start -->...<!-- BLOCK:end -->` block with the tables of this run's
    numbers (results.json, rendered like report.md's sections) and its plots (copied into `assets`);
    `config` is the run's experiment config, `command` is named as what produced it."""
    import os
    import shutil

    from ..errors import UserError

    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    run_dir, readme, assets = Path(run_dir), Path(readme), Path(assets)
    if not (run_dir / "results.json").is_file():
        raise UserError(f"{run_dir} has no results.json: run `sgt run CONFIG --out {run_dir}` first")
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise UserError(f"{readme} has no {start} ... {end} block to fill (add the two lines where the results go)")
    assets.mkdir(parents=True, exist_ok=True)
    results = load_results(run_dir)
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    tables = readme_tables(config, results["defenses"], drift_panels(results["defenses"], drift_outside(run_dir)),
                           results.get("unreadable_results"), results.get("searches"))
    images = []
    for png in sorted(run_dir.glob("*.png")):
        shutil.copyfile(png, assets / png.name)
        # links relative to the README, so that they work wherever the repository is
        link = Path(os.path.relpath(assets.resolve() / png.name, readme.resolve().parent)).as_posix()
        images.append(f"![{png.stem}]({link})")
    world = config.world
    lines = [start,
             f"Produced by `{command}` (experiment `{config.name}`, seed {config.seed}, world {world.kind} "
             f"{world.preset} seed {world.seed}) on {run.get('machine', 'an unrecorded machine')}, {timing_text(run)}, "
             f"finished {run.get('finished', 'n/a')}. Full report: `{_shown(run_dir, readme)}/report.md`.", "",
             tables, "", *images, end]
    new = text[: text.index(start)] + "\n".join(lines) + text[text.index(end) + len(end):]
    atomic_write_text(readme, new)
