"""README blocks (what `make demo` and `make real` refresh): a run's report sections and plots."""

from __future__ import annotations

from pathlib import Path

from ..utils import atomic_write_text, read_json


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


def update_readme(run_dir: str | Path, readme: str | Path, assets: str | Path, block: str = "demo-results",
                  command: str = "make demo") -> None:
    """Replace the README's `<!-- BLOCK:start -->...<!-- BLOCK:end -->` block with this run's tables and
    plots (copied into `assets`); `command` is named as what produced it."""
    import os
    import shutil

    from ..config import read_yaml
    from ..errors import UserError

    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    run_dir, readme, assets = Path(run_dir), Path(readme), Path(assets)
    report = run_dir / "report.md"
    if not report.is_file():
        raise UserError(f"{run_dir} has no report.md: run `sgt run CONFIG --out {run_dir}` first")
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise UserError(f"{readme} has no {start} ... {end} block to fill (add the two lines where the results go)")
    assets.mkdir(parents=True, exist_ok=True)
    config = read_yaml(run_dir / "config.yaml")
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    body = report.read_text(encoding="utf-8")
    # every section of the report from the summary on, except the long per-cell table and the plot list
    sections = ["## " + part for part in body.split("\n## ")[1:]]
    tables = "\n".join(part.rstrip() + "\n" for part in sections
                       if not part.startswith(("## Every attack cell", "## Plots")))
    tables = tables.replace("## ", "#### ")
    images = []
    for png in sorted(run_dir.glob("*.png")):
        shutil.copyfile(png, assets / png.name)
        # links relative to the README, so that they work wherever the repository is
        link = Path(os.path.relpath(assets.resolve() / png.name, readme.resolve().parent)).as_posix()
        images.append(f"![{png.stem}]({link})")
    world = config.get("world") or {}
    world_text = f", world {world.get('kind')} {world.get('preset')} seed {world.get('seed')}" if world else ""
    lines = [start,
             f"Produced by `{command}` (experiment `{config.get('name', '')}`, seed {config.get('seed')}{world_text}) on "
             f"{run.get('machine', 'an unrecorded machine')}, {timing_text(run)}, finished {run.get('finished', 'n/a')}. "
             f"Full report: `{_shown(run_dir, readme)}/report.md`.", "", tables.strip(), "", *images, end]
    new = text[: text.index(start)] + "\n".join(lines) + text[text.index(end) + len(end):]
    atomic_write_text(readme, new)
