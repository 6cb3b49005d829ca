"""`none`: the base model as released (the unaligned baseline)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import Defense, register


@register
class NoDefense(Defense):
    kind = "none"
    summary = "base model as is"
    undefended = True

    def __init__(self, name: str, settings: dict, context):
        super().__init__(name, settings, context)
        if settings:
            raise UserError(f"defense {name!r} (none) takes no settings, got {sorted(settings)}")

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "model": self.context.base_model}

    def apply(self, folder: Path) -> str:
        return self.context.base_model
