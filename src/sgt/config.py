"""Config dataclasses: one per stage, a help string per field, YAML files plus CLI overrides.

Precedence is `dataclass defaults < YAML file (--config) < CLI flags`. Every output folder gets the
resolved config (`config.yaml`) so a result can always be traced back to what produced it.

    @dataclass
    class MyConfig:
        lr: float = cfg(1e-3, "AdamW learning rate.")

    parser = argparse.ArgumentParser(); add_config_args(parser, MyConfig)
    config = config_from_args(MyConfig, parser.parse_args())
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .utils import atomic_write_text

CONFIG_FILE = "config.yaml"


def cfg(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A dataclass field with a help string (shown by `--help`); mutable defaults are copied."""
    metadata = {"help": help, **kwargs.pop("metadata", {})}
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=metadata, **kwargs)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, folder: str | Path, name: str = CONFIG_FILE) -> Path:
    """Write the resolved config as YAML into `folder` (atomically)."""
    data = config if isinstance(config, dict) else to_dict(config)
    path = Path(folder) / name
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (check the path)")
    try:
        data = yaml.safe_load(path.read_bytes())  # bytes: YAML's own encoding rules (UTF-8, or a UTF-16 BOM)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise UserError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of field: value at the top level")
    return data


def build_config(cls: type, values: dict | None = None, where: str = "config") -> Any:
    """Construct dataclass `cls` from a plain dict, converting types and rejecting unknown keys."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"unknown {where} field(s): {', '.join(unknown)} (valid fields: {', '.join(sorted(names))})"
        )
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    for name, value in kwargs.items():  # every seed of every config: one rule, before any work
        if name == "seed" or name.endswith("seeds"):
            check_seeds(value if isinstance(value, list) else [value], f"{where}.{name}")
    return cls(**kwargs)


def reference_defaults(cls: type) -> type:
    """Class decorator for a config with a `reference` field and a `REFERENCE` mapping: built with
    reference=True, every field of REFERENCE that is not given explicitly takes the reference's value, the
    same way from Python, YAML or the command line (fields set explicitly still win)."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        given = {**dict(zip(names, args)), **kwargs}
        if given.get("reference"):
            given = {**cls.REFERENCE, **given}
        init(self, **given)

    cls.__init__ = __init__
    return cls


def under(cls: type, values: dict, defaults: dict) -> dict:
    """`values` over those `defaults` that `cls` has fields for; a nested settings class (e.g. an sgt
    defense's `trigger:` and `align:` sections) gets them too. Used to put the run-wide fields (model,
    data, format, seed...) under the settings a config writes, so that what it writes wins."""
    hints = typing.get_type_hints(cls)
    merged, sections = {}, {}
    for f in dataclasses.fields(cls):
        kind = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(kind) and isinstance(values.get(f.name, {}), dict):
            sections[f.name] = under(kind, values.get(f.name) or {}, defaults)
        elif f.name in defaults:
            merged[f.name] = defaults[f.name]
    return {**merged, **values, **sections}


SEED_LIMIT = 2**32  # numpy (seeded by the Trainer) takes seeds in [0, 2**32)


def check_seeds(seeds: list, where: str) -> None:
    """Seeds are whole numbers in [0, 2**32) and listed once each (a repeated seed is the same run,
    which would be counted twice)."""
    for seed in seeds:
        if seed is not None and not 0 <= seed < SEED_LIMIT:
            raise UserError(f"{where} must be between 0 and {SEED_LIMIT - 1}, got {seed}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"{where} lists {repeated[0]} more than once: each seed is one run; list each seed once")


def check_fraction(value: float, where: str, zero: bool = True) -> None:
    """A fraction in [0, 1] (or (0, 1] when `zero` is false)."""
    if not (0 <= value <= 1 if zero else 0 < value <= 1):
        raise UserError(f"{where} must be a fraction {'between 0' if zero else 'above 0'} and 1, got {value}")


def load_config(cls: type, path: str | Path | None = None, overrides: dict | None = None) -> Any:
    """defaults < YAML file < overrides."""
    values = read_yaml(path) if path else {}
    values.update(overrides or {})
    return build_config(cls, values, where=cls.__name__)


# ---------------------------------------------------------------------------------------------
# CLI: one flag per dataclass field
# ---------------------------------------------------------------------------------------------


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add `--field-name` flags for every field of `cls` (plus `--config FILE.yaml`)."""
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", default=None, help="YAML file with field values (CLI flags win).")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _strip_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = None if f.default is dataclasses.MISSING else f.default
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = f"{help_text} (default: {default})".replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=help_text)


def config_from_args(cls: type, args: argparse.Namespace, extra: dict | None = None) -> Any:
    """Build `cls` from `--config` (if given) and the flags the user actually typed."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    overrides.update(extra or {})
    return load_config(cls, getattr(args, "config", None), overrides)


# ---------------------------------------------------------------------------------------------
# type conversion (YAML values are typed already; CLI values arrive as strings)
# ---------------------------------------------------------------------------------------------


def _strip_optional(kind: Any) -> Any:
    args = typing.get_args(kind)
    if _is_union(kind) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _convert(value: Any, kind: Any, where: str) -> Any:
    optional = _is_union(kind) and type(None) in typing.get_args(kind)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional or kind is Any:
            return None
        raise UserError(f"{where} must not be empty")
    kind = _strip_optional(kind)
    origin = typing.get_origin(kind)
    try:
        if kind is Any:
            return value
        if dataclasses.is_dataclass(kind):
            if dataclasses.is_dataclass(value):
                return value
            if not isinstance(value, dict):
                raise UserError(f"{where} must be a mapping of field: value")
            return build_config(kind, value, where=where)
        if kind is bool:
            return _to_bool(value, where)
        if kind in (int, float):
            if isinstance(value, bool):
                raise ValueError
            if kind is int and (isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit())):
                return int(value)  # exactly, however large
            number = float(value)
            if not math.isfinite(number):  # .inf / .nan: no setting means that (an lr of inf diverges)
                raise UserError(f"{where} must be a finite number, got {value!r}")
            if kind is int and not number.is_integer():
                raise ValueError
            return int(number) if kind is int else number
        if kind is str:
            return str(value)
        if origin in (list, tuple) or kind in (list, tuple):
            (inner,) = typing.get_args(kind)[:1] or (Any,)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        if origin is dict or kind is dict:
            if isinstance(value, str):  # "a=b,c=d" from the command line
                pairs = [p for p in value.split(",") if p.strip()]
                if any("=" not in p for p in pairs):
                    raise UserError(f"{where} expects key=value pairs separated by commas, got {value!r}")
                value = dict(p.split("=", 1) for p in pairs)
                value = {k.strip(): v.strip() for k, v in value.items()}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if _is_union(kind):  # e.g. int | str: keep what YAML gave us
            return value
    except (TypeError, ValueError):
        raise UserError(f"{where} has an invalid value {value!r} (expected {_type_name(kind)})") from None
    return value


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UserError(f"{where} must be true or false, got {value!r}")


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def show_config(config: Any, indent: int = 0) -> str:
    """The resolved config as YAML-like text, each field followed by its help (`sgt run --show`)."""
    lines = []
    pad = "  " * indent
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{'  # ' + help_text if help_text else ''}")
            lines.append(show_config(value, indent + 1))
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            text = text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text
            lines.append(f"{pad}{f.name}: {text}{'  # ' + help_text if help_text else ''}")
    return "\n".join(lines)
