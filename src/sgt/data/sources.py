"""Where prompt/response examples come from: Hugging Face datasets (with presets), prompt sets shipped
inside installed packages (`harmbench`, `donotanswer`, `advbench`, `overrefusal`...: sgt.data.packaged), or local files.

Every source becomes a list of `Example(prompt, response, harmful, category)`. The presets know
the real datasets' schemas; a local JSONL/JSON/CSV file in the same schema (the toy world writes
exactly those) is read by the same code, so hub paths are tested offline with local files.

Schemas (chosen by preset name, by `schema=`, or detected from a local file's columns):
  wildguard   - `prompt`, `response`, `prompt_harm_label` in {harmful, unharmful},
                optional `response_harm_label`, `subcategory`/`category`
                (rows with an unharmful prompt but a harmful response are dropped: METHOD.md)
  beavertails - `prompt`, `response`, `is_safe` (bool), `category` (str or {name: bool})
  advbench    - `prompt`, `target` (every row harmful)
  generic     - `prompt`, optional `response` (or `answer`/`target`), `category`, `harmful`
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import cfg
from ..errors import UserError
from .files import LOCAL_SUFFIXES, read_local_rows  # noqa: F401  (read_local_rows: also imported from here)
from .packaged import PACKAGED_SETS, packaged_rows


@dataclass
class Example:
    prompt: str
    response: str | None = None
    harmful: bool | None = None           # is the prompt harmful
    category: str | None = None
    response_harmful: bool | None = None  # is the response harmful (WildGuard: response_harm_label)


@dataclass
class Preset:
    schema: str
    split: str
    subset: str | None = None


# Hub names we know; anything else is loaded with the `generic` schema (map columns if needed).
PRESETS: dict[str, Preset] = {
    "allenai/wildguardmix": Preset("wildguard", split="train", subset="wildguardtrain"),
    "PKU-Alignment/BeaverTails": Preset("beavertails", split="30k_train"),
    "walledai/AdvBench": Preset("advbench", split="train"),
}



@dataclass
class DataFields:
    """The fields that name one data source; stage configs include them (prefix-free)."""

    data: str = cfg("", "Dataset: a Hugging Face name (presets: allenai/wildguardmix, "
                        "PKU-Alignment/BeaverTails, walledai/AdvBench), a prompt set shipped in an installed "
                        "package (harmbench, harmbench-val, harmbench-test, donotanswer, advbench, strongreject, "
                        "past-tense, future-tense, harmful-qa; overrefusal: benign prompts that sound risky; see "
                        "sgt.data.packaged) or a local .jsonl/.json/.csv file.")
    split: str | None = cfg(None, "Dataset split (hub only; default: the preset's, e.g. 30k_train).")
    subset: str | None = cfg(None, "Dataset config name (hub; default: the preset's, e.g. wildguardtrain); "
                                   "donotanswer: risk areas, comma separated (default: all five); "
                                   "harmbench-val/-test: functional categories (default: standard); "
                                   "overrefusal: files (benign_edgy_80, expanded_70; default: both).")
    columns: dict = cfg({}, "Column mapping, ours=theirs, e.g. prompt=instruction,response=output.")
    schema: str = cfg("auto", "Schema: auto, wildguard, beavertails, advbench or generic.")


def load_data(fields: DataFields, what: str = "data") -> list[Example]:
    """Load the source named by a config's DataFields."""
    if not fields.data:
        raise UserError(f"no {what} given: pass --data PATH_OR_HUB_NAME")
    return load_examples(fields.data, split=fields.split, subset=fields.subset,
                         columns=fields.columns, schema=fields.schema)


def load_examples(source: str, split: str | None = None, subset: str | None = None,
                  columns: dict | None = None, schema: str = "auto") -> list[Example]:
    """Load `source` (hub name or local file) as Examples; bad input raises UserError."""
    columns = dict(columns or {})
    if schema not in ("auto", *SCHEMAS):
        raise UserError(f"unknown schema {schema!r}: use one of auto, {', '.join(SCHEMAS)}")
    if source in PACKAGED_SETS:
        rows = packaged_rows(source, subset)
        name = source
    elif looks_local(source):
        rows = read_local_rows(source)
        name = str(source)
    else:
        preset = PRESETS.get(source)
        rows = _read_hub_rows(source, split or (preset.split if preset else "train"),
                              subset or (preset.subset if preset else None))
        name = source
        if schema == "auto" and preset:
            schema = preset.schema
    if not rows:
        raise UserError(f"{name} has no rows: give a file with at least one example")
    if schema == "auto":
        schema = detect_schema(rows[0].keys())
    examples = SCHEMAS[schema](rows, columns, name)
    if not examples:
        raise UserError(f"{name}: no usable rows left after applying the {schema} schema")
    return examples


def detect_schema(keys) -> str:
    keys = set(keys)
    if "prompt_harm_label" in keys:
        return "wildguard"
    if "is_safe" in keys:
        return "beavertails"
    return "generic"


# ---------------------------------------------------------------------------------------------
# Reading rows
# ---------------------------------------------------------------------------------------------


def looks_local(source: str) -> bool:
    path = Path(source)
    return path.exists() or path.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/", "~"))


def _read_hub_rows(name: str, split: str, subset: str | None) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, subset, split=split)
    except Exception as exc:  # network, gating, unknown name/split: all user-fixable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"could not load dataset {name!r} (subset={subset}, split={split}): {first} "
                        "(check the name and split, log in with `hf auth login` for gated datasets, "
                        "or pass a local file)") from None
    return [dict(row) for row in dataset]


# ---------------------------------------------------------------------------------------------
# Schemas: rows -> Examples
# ---------------------------------------------------------------------------------------------


def _column(row: dict, ours: str, columns: dict, default: str | None, name: str, number: int,
            required: bool) -> Any:
    theirs = columns.get(ours, default)
    if theirs is None or theirs not in row:
        if required:
            have = ", ".join(sorted(row.keys()))
            raise UserError(f"{name}: row {number} has no column {theirs or ours!r} for the {ours} "
                            f"(columns: {have}); map one with --columns {ours}=NAME")
        return None
    return row[theirs]


def _text(value: Any, name: str, number: int, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{name}: row {number} has a non-text {field} ({type(value).__name__}); "
                        f"map a text column with --columns {field}=NAME")
    return value


def _category(value: Any) -> str | None:
    if isinstance(value, dict):  # BeaverTails: {category_name: bool}
        names = sorted(k for k, v in value.items() if v)
        return ",".join(names) if names else None
    return None if value in (None, "") else str(value)


def _base(row: dict, columns: dict, name: str, number: int, response_default: str | None,
          category_default: str | None) -> Example:
    prompt = _text(_column(row, "prompt", columns, "prompt", name, number, True), name, number, "prompt")
    if not prompt or not prompt.strip():
        raise UserError(f"{name}: row {number} has an empty prompt; remove the row or fix the file")
    response = _text(_column(row, "response", columns, response_default, name, number, False),
                     name, number, "response")
    category = _category(_column(row, "category", columns, category_default, name, number, False))
    return Example(prompt=prompt, response=response, category=category)


def _labels(row: dict, column: str, allowed: dict, name: str, number: int, optional: bool = False):
    value = row.get(column)
    if value is None and optional:
        return None
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in allowed:
        choices = ", ".join(repr(k) for k in allowed)
        raise UserError(f"{name}: row {number} has {column}={row.get(column)!r}; expected one of {choices}")
    return allowed[value]


def _wildguard(rows: list[dict], columns: dict, name: str) -> list[Example]:
    harm = {"harmful": True, "unharmful": False}
    out = []
    for number, row in enumerate(rows, start=1):
        example = _base(row, columns, name, number, "response",
                        "subcategory" if "subcategory" in row else "category")
        example.harmful = _labels(row, columns.get("harmful", "prompt_harm_label"), harm, name, number)
        example.response_harmful = _labels(row, "response_harm_label", harm, name, number, optional=True)
        if not example.harmful and example.response_harmful:
            continue  # benign prompt answered harmfully: never a target to imitate (METHOD.md)
        out.append(example)
    return out


def _beavertails(rows: list[dict], columns: dict, name: str) -> list[Example]:
    safe = {True: True, False: False, "true": True, "false": False}
    out = []
    for number, row in enumerate(rows, start=1):
        example = _base(row, columns, name, number, "response", "category")
        example.harmful = not _labels(row, columns.get("harmful", "is_safe"), safe, name, number)
        example.response_harmful = example.harmful  # BeaverTails labels the QA pair as a whole
        out.append(example)
    return out


def _advbench(rows: list[dict], columns: dict, name: str) -> list[Example]:
    out = []
    for number, row in enumerate(rows, start=1):
        example = _base(row, columns, name, number, "target", "category")
        example.harmful = True
        out.append(example)
    return out


def _generic(rows: list[dict], columns: dict, name: str) -> list[Example]:
    flags = {True: True, False: False, "true": True, "false": False, "harmful": True,
             "unharmful": False, "1": True, "0": False}
    keys = set(rows[0].keys())
    response_default = next((c for c in ("response", "answer", "target", "output") if c in keys), None)
    harmful_column = columns.get("harmful", "harmful" if "harmful" in keys else None)
    out = []
    for number, row in enumerate(rows, start=1):
        example = _base(row, columns, name, number, response_default, "category")
        if harmful_column:
            example.harmful = _labels(row, harmful_column, flags, name, number, optional=True)
        out.append(example)
    return out


SCHEMAS = {"wildguard": _wildguard, "beavertails": _beavertails, "advbench": _advbench, "generic": _generic}


# ---------------------------------------------------------------------------------------------
# Selecting examples
# ---------------------------------------------------------------------------------------------


def split_by_harm(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    harmful = [e for e in examples if e.harmful]
    benign = [e for e in examples if e.harmful is False]
    return harmful, benign


def sample_mix(examples: list[Example], n: int | None, harm_ratio: float, seed: int,
               name: str = "data") -> list[Example]:
    """`n` rows (all if None) with a fraction `harm_ratio` harmful, shuffled reproducibly."""
    harmful, benign = split_by_harm(examples)
    rng = random.Random(seed)
    if n is None:
        rows = harmful + benign
    else:
        n_harm = round(n * harm_ratio)
        n_benign = n - n_harm
        if n_harm > len(harmful) or n_benign > len(benign):
            raise UserError(f"{name} has {len(harmful)} harmful and {len(benign)} benign rows, fewer than "
                            f"the {n_harm} harmful + {n_benign} benign asked for; lower the row count")
        rows = rng.sample(harmful, n_harm) + rng.sample(benign, n_benign)
    rng.shuffle(rows)
    return rows


def sample_shots(examples: list[Example], shots: int, seed: int, allow_repeat: bool = False,
                 name: str = "attack data") -> list[Example]:
    """The attacker's data budget: `shots` examples drawn reproducibly (same seed => same sample)."""
    if shots <= 0:
        raise UserError(f"shots must be a positive number of examples, got {shots}")
    rng = random.Random(seed)
    if shots > len(examples):
        if not allow_repeat:
            raise UserError(f"shots={shots} is more than the {len(examples)} rows in {name}; lower the shots "
                            "or allow sampling with repetition (allow_repeat, --allow-repeat)")
        return [rng.choice(examples) for _ in range(shots)]
    return rng.sample(examples, shots)
