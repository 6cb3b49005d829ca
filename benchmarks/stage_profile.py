"""Run one `sgt` command and record, for every stage in it, the wall time and the peak GPU memory:
the rows of the table benchmarks/gpu_study.sh prints.

    python benchmarks/stage_profile.py --part study --table OUT/stages.jsonl -- run configs/gpu-study.yaml --out OUT/study
    python benchmarks/stage_profile.py --print OUT/stages.jsonl

Stages: every training stage (`sgt.launch.run_stage`: trigger, align, sft, attack, defend), every model
evaluation of `sgt run` (generation, benign score, drift: `ModelEvaluator.answer`) and a world build;
the whole command is one more row. Peak memory = torch.cuda.max_memory_allocated / max_memory_reserved
of this process, reset when a stage starts (a stage under a launcher runs in other processes: profile
the launched command instead, as gpu_study.sh does for FSDP). Rows are appended as stages finish, so a
command stopped by a timeout keeps the rows of what it finished. Without CUDA the memory columns are
empty (the timing still works, which is how this file is checked on CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

GiB = 2 ** 30


def profiled(function, part: str, table: Path, label):
    """`function`, recording one row per call: label(*args), seconds, peak memory, whether it finished."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start, ok = time.time(), False
        try:
            result = function(*args, **kwargs)
            ok = not (isinstance(result, int) and result != 0)  # sgt.cli.main returns an exit code
            return result
        finally:
            record(table, part, label(*args, **kwargs), time.time() - start, ok)
    return wrapper


def record(table: Path, part: str, stage: str, seconds: float, ok: bool) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under a launcher: rank 0 speaks for the stage
    row = {"part": part, "stage": stage, "seconds": round(seconds, 1), "ok": ok,
           "peak_allocated_gib": None, "peak_reserved_gib": None}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
    with open(table, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def tail(path, parts: int) -> str:
    return "/".join(Path(str(path)).parts[-parts:])


def run(part: str, table: Path, argv: list[str]) -> int:
    # run_stage is patched before sgt.cli imports the defenses and attacks that bind it by name
    import sgt.launch

    sgt.launch.run_stage = profiled(sgt.launch.run_stage, part, table,
                                    lambda command, config, function, launcher, folder: f"{command}: {tail(folder, 2)}")
    import sgt.worlds
    from sgt.experiment.evaluation import ModelEvaluator

    sgt.worlds.build_world = profiled(sgt.worlds.build_world, part, table,
                                      lambda config: f"world build: {config.kind} {config.preset}")
    ModelEvaluator.answer = profiled(ModelEvaluator.answer, part, table,
                                     lambda self, model_dir: f"evaluate: {tail(model_dir, 3)}")
    import sgt.cli

    command = " ".join(word for word in argv if not word.startswith("-"))[:40]
    return profiled(sgt.cli.main, part, table, lambda argv: f"whole command: sgt {command}")(argv)


def print_table(table: Path) -> None:
    """The rows as one Markdown table (pasted into the README as it is)."""
    rows = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines() if line.strip()]

    def gib(value):
        return "n/a" if value is None else f"{value:.2f}"

    print("| part | stage | wall time (s) | peak GPU memory allocated (GiB) | reserved (GiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        stage = r["stage"] + ("" if r["ok"] else " **(failed)**")
        print(f"| {r['part']} | {stage} | {r['seconds']:.1f} | {gib(r['peak_allocated_gib'])} | "
              f"{gib(r['peak_reserved_gib'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="run", help="Name of this part of the study (first column).")
    parser.add_argument("--table", type=Path, help="JSONL file the rows are appended to.")
    parser.add_argument("--print", dest="print_table", type=Path, help="Print this JSONL table and exit.")
    parser.add_argument("sgt_args", nargs=argparse.REMAINDER, help="-- then the sgt command line")
    args = parser.parse_args()
    if args.print_table:
        print_table(args.print_table)
        return 0
    argv = args.sgt_args[1:] if args.sgt_args[:1] == ["--"] else args.sgt_args
    if not args.table or not argv:
        parser.error("give --table FILE and, after --, an sgt command line")
    return run(args.part, args.table, argv)


if __name__ == "__main__":
    sys.exit(main())
