"""Config loading (defaults < YAML < CLI flags), saved resolved configs, and CLI error handling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from conftest import run_cli
from sgt.config import build_config, cfg, load_config, save_config
from sgt.errors import UserError


@dataclass
class Example:
    lr: float = cfg(1e-3, "learning rate")
    layers: list[int] = cfg([], "layers")
    columns: dict = cfg({}, "mapping")
    lora: bool = cfg(False, "use LoRA")
    rows: int | None = cfg(10, "rows")


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nlayers: [1, 2]\nrows: null\n", encoding="utf-8")
    config = load_config(Example, path, {"lr": "2e-4", "columns": "prompt=q,response=a", "lora": "true"})
    assert config == Example(lr=2e-4, layers=[1, 2], columns={"prompt": "q", "response": "a"}, lora=True, rows=None)
    save_config(config, tmp_path / "out")
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["lr"] == 2e-4


@pytest.mark.parametrize("values, message", [
    ({"nope": 1}, "unknown Example field"),
    ({"lr": "fast"}, "invalid value"),
    ({"lora": "maybe"}, "true or false"),
    ({"layers": "1,x"}, "invalid value"),
])
def test_bad_config_values(values, message):
    with pytest.raises(UserError, match=message):
        build_config(Example, values, where="Example")


def test_help_lists_subcommands():
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("world", "trigger", "align", "sft", "attack", "eval", "drift", "run", "report"):
        assert command in out


def test_subcommand_help_shows_field_help():
    code, out, _ = run_cli("align", "--help")
    assert code == 0 and "--positions" in out and "predicting" in out and "--lora" in out


@pytest.mark.parametrize("args, message", [
    (("trigger", "--lr", "abc", "--model", "m", "--out", "o"), "invalid value"),
    (("align", "--positions", "everywhere"), "positions must be one of"),
    (("attack", "--shots", "0"), "shots must be a positive"),
    (("sft", "--model", "/nonexistent/model", "--data", "/nonexistent.jsonl", "--out", "x"), "not found"),
    (("world", "build", "--preset", "huge", "--out", "x"), "unknown toy world preset"),
    (("trigger", "--bogus-flag", "1"), "unrecognized arguments"),
])
def test_user_errors_are_one_line_exit_2(args, message):
    code, out, err = run_cli(*args)
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
