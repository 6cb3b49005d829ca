"""`none`: the base model as released (the unaligned baseline)."""

from __future__ import annotations

from pathlib import Path

from . import Defense, register


@register
class NoDefense(Defense):
    kind = "none"
    summary = "base model as is"
    undefended = True  # (settings_class: NoSettings, it takes none)

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "model": self.context.model}

    def apply(self, folder: Path) -> str:
        return self.context.model
