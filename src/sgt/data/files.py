"""Reading local data files (JSONL, JSON, CSV) into rows, with a one-line error for every way a file can be bad."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..errors import UserError

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv")


def read_local_rows(path: str | Path) -> list[dict]:
    """Read a JSONL/JSON/CSV file into dicts, with one-line errors for every way it can be bad."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check the path)")
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise UserError(f"unsupported data file type {suffix!r} for {path}: use .jsonl, .json or .csv")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"data file {path} is not UTF-8 text (undecodable byte at offset {exc.start}); "
                        "re-save it as UTF-8") from None
    if not text.strip():
        raise UserError(f"data file {path} is empty: give a file with at least one example")
    if suffix == ".jsonl":
        rows = []
        # JSON Lines are separated by "\n" only: U+2028, U+0085 or a form feed inside a string is text
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                rows.append(_parse_json(line, f"{path} line {number}"))
    elif suffix == ".json":
        data = _parse_json(text, str(path))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path} must hold a JSON list of objects (or {{\"data\": [...]}})")
        rows = data
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))  # the csv module splits rows itself
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {number} is not an object with named fields")
    return rows


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno})") from None
