"""One registry for every kind of plug-in: defenses, attacks, judges, generators and worlds.

A plug-in is a class (a world kind: a module) in a module of its package that registers itself:

    @DEFENSES.register
    class MyDefense(Defense):
        kind = "my-defense"

The registry finds its plug-ins by importing every module of its package on the first lookup, so adding
one is one new file. Every kind has the same lookup and the same one-line error for a name it does not
know, listing the names it knows in the order they were registered (a package that cares about that order
imports its modules in it).
"""

from __future__ import annotations

import importlib
import pkgutil

from .errors import UserError


class Registry:
    """Plug-ins of one kind by name. `what` names the kind in errors ("defense", "judge"...); `package` is
    where its modules live; `key` is the class attribute holding a plug-in's name."""

    def __init__(self, what: str, package: str, key: str = "name"):
        self.what, self.package, self.key = what, package, key
        self._entries: dict[str, object] = {}
        self._discovered = False

    def register(self, plugin=None, *, name: str | None = None):
        """Register `plugin` under `name` (default: its `key` attribute); usable as a class decorator."""
        if plugin is None:
            return lambda p: self.register(p, name=name)
        self._entries[name or getattr(plugin, self.key)] = plugin
        return plugin

    def _discover(self) -> None:
        """Import every module of the package (and of its sub-packages) once: each registers its plug-ins."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{self.package}."):
            if not module.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(module.name)

    def all(self) -> dict[str, object]:
        """Every registered plug-in by name, in the order they were registered."""
        self._discover()
        return dict(self._entries)

    def names(self) -> list[str]:
        return list(self.all())

    def __contains__(self, name: str) -> bool:
        return name in self.all()

    def get(self, name: str, where: str = ""):
        """The plug-in called `name`, or a one-line error naming the known ones (`where`: the config field)."""
        entries = self.all()
        if name not in entries:
            place = f" in {where}" if where else ""
            raise UserError(f"unknown {self.what} {name!r}{place}; use one of {', '.join(entries)}")
        return entries[name]
