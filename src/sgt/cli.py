"""The `sgt` command: a thin layer that parses flags into a config and calls one function.

Every user error ends as one line on stderr and exit code 2 (argparse errors included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


@dataclass
class Command:
    """A subcommand: its config dataclass, the function that runs it, and a one-line summary."""

    path: tuple[str, ...]
    summary: str
    config: Callable[[], type]
    run: Callable[[object], object]


def _world_build(config):
    from pathlib import Path

    from .worlds import build_world

    manifest = build_world(config)
    return {"out": str(Path(config.out or config.default_dir()).resolve()),
            **{k: manifest.get(k) for k in ("kind", "preset", "seed", "base", "parameters", "build_seconds",
                                            "sizes", "quality")}}


def _commands() -> list[Command]:
    # Imports are inside the lambdas so that `sgt --help` does not load torch.
    def lazy(module: str, name: str):
        def get():
            import importlib

            return getattr(importlib.import_module(f"sgt.{module}"), name)
        return get

    def runner(module: str, name: str):
        return lambda config: lazy(module, name)()(config)

    return [
        Command(("world", "build"), "Build (or reuse) a world: the toy world (generated data + tiny base) or a real "
                                    "one (a real base model + packaged prompt sets + its own answers).",
                lazy("worlds", "WorldConfig"), _world_build),
        Command(("trigger",), "Stage 1: learn the Safety Guidance Trigger on the frozen model.",
                lazy("methods.trigger", "TriggerConfig"), runner("methods.trigger", "learn_trigger")),
        Command(("align",), "Stage 2: align the model's representations to the trigger-induced ones.",
                lazy("methods.align", "AlignConfig"), runner("methods.align", "align_model")),
        Command(("sft",), "Supervised fine-tuning on prompt/response data (--refuse-harmful: the sft defense).",
                lazy("methods.finetune", "FinetuneConfig"), runner("methods.finetune", "run_finetune")),
        Command(("attack",), "Malicious fine-tuning: SFT on `shots` harmful question->answer pairs.",
                lazy("methods.finetune", "AttackConfig"), runner("methods.finetune", "run_finetune")),
        Command(("eval", "harm"), "Harmfulness: generate answers to harmful prompts and judge them.",
                lazy("evaluation.harm", "HarmEvalConfig"), runner("evaluation.harm", "evaluate_harm")),
        Command(("defend",), "Apply any registered defense (none, sft, sgt, repnoise, booster, ...) to a model.",
                lazy("defenses.defend", "DefendConfig"), runner("defenses.defend", "run_defend")),
        Command(("drift",), "Representation drift: per-layer distance of models' harmful-prompt states to base + trigger.",
                lazy("evaluation.drift", "DriftConfig"), runner("evaluation.drift", "measure_drift")),
        Command(("diagnose",), "Why an aligned model does (not) refuse like base + trigger: next-token KL, top-1 "
                               "agreement and refusal rates at the position that decides, per prompt set.",
                lazy("evaluation.diagnosis", "DiagnoseConfig"), runner("evaluation.diagnosis", "run_diagnosis")),
        Command(("eval", "benign"), "Benign capability: lm-evaluation-harness tasks and exact-match files.",
                lazy("evaluation.benign", "BenignEvalConfig"), runner("evaluation.benign", "evaluate_benign")),
        Command(("judge", "audit"), "Score a judge against human labels (pyrit's label sets): accuracy, FPR, FNR, "
                                    "Cohen's kappa.",
                lazy("evaluation.judge_audit", "JudgeAuditConfig"), runner("evaluation.judge_audit", "run_audit")),
    ]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's config module is imported (fast --help)."""
    from . import __version__
    from .config import add_config_args

    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="sgt", description="SGT: harden open-weight LLMs against malicious fine-tuning "
                                             "with a Safety Guidance Trigger, attack them, measure what is left.")
    parser.add_argument("--version", action="version", version=f"sgt {__version__}")
    parser.add_argument("--verbose", action="store_true", help="Show library warnings and full tracebacks.")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    words = [a for a in argv if not a.startswith("-")]
    for command in _commands():
        head = command.path[0]
        if len(command.path) == 1:
            sub = top.add_parser(head, help=command.summary, description=command.summary)
        else:
            if head not in groups:
                group = top.add_parser(head, help=_group_help(head), description=_group_help(head))
                groups[head] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
                group.set_defaults(group_parser=group)
            sub = groups[head].add_parser(command.path[1], help=command.summary, description=command.summary)
        sub.set_defaults(command_obj=command)
        if list(command.path) == words[: len(command.path)]:
            add_config_args(sub, command.config())
    run = top.add_parser("run", help="Run a whole experiment from one YAML config: defenses x attack grid x evaluation -> report.",
                         description="Run a whole experiment from one YAML config (resumable).")
    run.add_argument("experiment", metavar="CONFIG.yaml", help="Experiment config (see configs/toy.yaml).")
    run.add_argument("--out", default=None, help="Output folder for the run (re-running resumes it); required unless --show.")
    run.add_argument("--dry-run", action="store_true", help="Validate the whole config and print the plan, "
                                                            "without loading any weights.")
    from .memory_plan import gpu_gib_value

    run.add_argument("--gpu-memory", type=gpu_gib_value, default=80.0, metavar="GIB",
                     help="GPU size in GiB for the memory plan that --dry-run prints (default 80): per training "
                          "stage, weights, gradients, AdamW, the stage-2 teacher, logits and activations per "
                          "process under the launcher, and the GPUs needed. Activations assume rows padded to "
                          "max_length and Llama-style layers with SDPA/flash attention (7h + 2kv + 4i values "
                          "per token per layer; with gradient checkpointing, each layer's input plus one layer); "
                          "see sgt.memory_plan.ACTIVATIONS.")
    run.add_argument("--show", action="store_true", help="Print the resolved config, every field with its help text.")
    run.add_argument("--force", action="store_true", help="Reuse an output folder that holds a run of another config.")
    run.add_argument("--reuse", default=None, metavar="RUN_DIR",
                     help="Copy from another run folder every defended model and result this run would produce "
                          "identically (same fingerprints), e.g. the defenses two studies share.")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="Override a config value, e.g. --set attack.shots=[8,32] (repeatable).")
    run.set_defaults(command_obj=None, run_experiment=True)
    report = top.add_parser("report", help="Rebuild a run's report; optionally refresh the README's demo block.",
                            description="Rebuild report.md, results.json and plots of a finished (or partial) run.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="Output folder of `sgt run`.")
    report.add_argument("--readme", default=None, help="README file whose results block is replaced.")
    report.add_argument("--block", default="demo-results",
                        help="Name of the README block: <!-- NAME:start --> ... <!-- NAME:end -->.")
    report.add_argument("--command", default="make demo", help="The command named as the block's producer.")
    report.add_argument("--assets", default="docs/demo", help="Where the plots are copied for the README.")
    report.set_defaults(command_obj=None, report_command=True)
    return parser


def _group_help(head: str) -> str:
    return {"world": "Worlds: a base model and every data file an experiment needs.",
            "eval": "Evaluate a model: harm or benign capability.",
            "judge": "Judges: check a judge against human labels."}[head]


def _quiet_libraries() -> None:
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        import datasets

        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    for name in ("accelerate", "lm_eval", "lm-eval", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    special = getattr(args, "run_experiment", False) or getattr(args, "report_command", False)
    if not special and getattr(args, "command_obj", None) is None:
        target = getattr(args, "group_parser", parser)
        target.print_help()
        return 0 if args.command is None else 2
    if not args.verbose:
        _quiet_libraries()
    try:
        result = _dispatch(args)
    except UserError as exc:
        sys.stderr.write(f"sgt: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("sgt: interrupted\n")
        return 130
    except Exception as exc:  # out of memory or disk space is the user's to fix; anything else is our bug
        if type(exc).__name__ == "OutOfMemoryError":
            sys.stderr.write("sgt: error: out of memory; lower --batch-size, raise --grad-accum, "
                             "use --lora or --gradient-checkpointing\n")
            return 2
        problem = storage_problem(exc)
        if problem:
            sys.stderr.write(f"sgt: error: {problem} while writing; free some space (or choose another --out) "
                             "and run the command again\n")
            return 2
        raise
    from .utils import is_main_process

    if result is not None and is_main_process():
        print(json.dumps(_printable(result), indent=2))
    return 0


def storage_problem(exc: BaseException) -> str | None:
    """"no space left on device" (or over quota, or a read-only file system) when `exc` is one, also as
    raised by libraries that wrap the OS error in their own (safetensors: "IoError(Os { code: 28, ...")."""
    import errno

    codes = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system"}
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, OSError) and error.errno in codes:
            return codes[error.errno]
    text = str(exc)
    for code, problem in codes.items():
        if f"code: {code}," in text or os.strerror(code) in text:
            return problem
    return None


def _dispatch(args):
    from .config import config_from_args

    if getattr(args, "run_experiment", False):
        from .experiment import run_from_cli

        return run_from_cli(args.experiment, args.out, dry_run=args.dry_run, force=args.force, overrides=args.set,
                            show=args.show, reuse=args.reuse, gpu_memory=args.gpu_memory)
    if getattr(args, "report_command", False):
        from .experiment import report_from_cli

        return report_from_cli(args.run_dir, args.readme, args.assets, args.block, args.command)
    command: Command = args.command_obj
    config = config_from_args(command.config(), args)
    return command.run(config)


def _printable(result):
    if isinstance(result, dict):
        hidden = ("loss_history", "component_history", "rows_detail", "items")  # long; in the output files
        return {k: _printable(v) for k, v in result.items() if k not in hidden}
    return result


if __name__ == "__main__":
    raise SystemExit(main())
