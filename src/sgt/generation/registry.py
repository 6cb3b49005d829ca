"""The generators' registry: a generator registers itself with `@GENERATORS.register` (by its `name`)."""

from __future__ import annotations

from ..registry import Registry

GENERATORS = Registry("generator", "sgt.generation")
