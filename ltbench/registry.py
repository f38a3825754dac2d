"""Name -> factory registries for benchmarks, methods and backbones.

Built-ins register with a decorator; third-party packages add entries through entry points
(groups ``ltbench.methods``, ``ltbench.datasets``, ``ltbench.backbones``), loaded lazily by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from .errors import LtbenchError


@dataclass
class Entry:
    name: str
    obj: Any
    origin: str  # "builtin (ltbench.methods.ce)" or "plugin <dist> (<module:attr>)"


@dataclass
class Registry:
    kind: str  # "method", "benchmark", "backbone"
    group: str  # entry-point group
    builtin_module: str  # imported before first lookup so its decorators run
    validate: Callable[[Any], list[str]] | None = None  # problems of an entry, refused when it registers
    # "prefix:rest" names made on demand (backbones: "timm:<name>"): prefix -> a function of rest to the entry
    prefixes: dict[str, Callable[[str], Any]] = field(default_factory=dict)
    _entries: dict[str, Entry] = field(default_factory=dict)
    _builtins_loaded: bool = False

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key].obj is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            problems = self.validate(obj) if self.validate else []
            if problems:
                raise ValueError(f"{self.kind} {key!r} ({obj.__module__}): {'; '.join(problems)}.")
            self._entries[key] = Entry(key, obj, f"builtin ({obj.__module__})")
            return obj

        return deco

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            import_module(self.builtin_module)

    def _plugin_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def _load_plugin(self, ep: Any) -> Entry:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must say which one
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            raise LtbenchError(
                f"the {self.kind} plugin {ep.name!r} (entry point {ep.value!r} of package {dist}) "
                f"failed to import: {exc}. Fix or uninstall that package."
            ) from exc
        dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown package"
        problems = self.validate(obj) if self.validate else []
        if problems:
            raise LtbenchError(f"the {self.kind} plugin {ep.name!r} (entry point {ep.value!r} of package {dist}) "
                               f"cannot be used: {'; '.join(problems)}.")
        entry = Entry(ep.name, obj, f"plugin {dist} ({ep.value})")
        self._entries[ep.name] = entry
        return entry

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(set(self._entries) | set(self._plugin_points()))

    def entries(self) -> list[Entry]:
        self._load_builtins()
        points = self._plugin_points()
        for name, ep in points.items():
            if name not in self._entries:
                self._load_plugin(ep)
        return [self._entries[n] for n in sorted(self._entries)]

    def get_entry(self, name: str) -> Entry:
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        points = self._plugin_points()
        if name in points:
            return self._load_plugin(points[name])
        prefix, colon, rest = name.partition(":")
        if colon and prefix in self.prefixes:
            obj = self.prefixes[prefix](rest)
            return Entry(name, obj, f"builtin ({obj.__module__}, {prefix}:<name>)")
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LtbenchError(
            f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known)} "
            f"(see `ltbench list`)."
        )

    def get(self, name: str) -> Any:
        return self.get_entry(name).obj


def _method_problems(obj: Any) -> list[str]:
    from .method import check_hparam_names

    return check_hparam_names(obj)


methods = Registry("method", "ltbench.methods", "ltbench.methods", validate=_method_problems)
benchmarks = Registry("benchmark", "ltbench.datasets", "ltbench.datasets")
# pretrained imports backbones and experts: all three register
backbones = Registry("backbone", "ltbench.backbones", "ltbench.models.pretrained")
