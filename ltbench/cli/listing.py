"""`ltbench list [methods|benchmarks|backbones|configs|settings]`: what is registered, its defaults and
where it comes from, in tables that fit the terminal (ltbench.cli.columns); `--wide`: one line a row."""

from __future__ import annotations

from typing import Any

from ..errors import LtbenchError
from .columns import fit_table, output_width, wraps

KINDS = ("methods", "benchmarks", "backbones")


def print_listing(kind: str, wide: bool = False) -> None:
    width = 10**6 if wide else output_width()
    if kind in ("settings", "setting"):
        _settings(width)
    elif kind in ("configs", "config"):  # the shipped config files (`ltbench run --config NAME`)
        from ..spec.config import shipped_summaries

        print(fit_table(shipped_summaries(), ["config", "what"], width))
    else:
        kind = kind if kind in KINDS or kind == "all" or f"{kind}s" not in KINDS else f"{kind}s"  # `list method`
        if kind != "all" and kind not in KINDS:
            raise LtbenchError(f"`ltbench list {kind}`: expected one of methods, benchmarks, backbones, configs, "
                               "settings, all.")
        for name in [kind] if kind != "all" else KINDS:
            print(f"{name}:")
            print(_registered(name, width))
            print()


def _settings(width: int) -> None:
    """Every engine setting of a stage (the schema), then each method's own keys: key, default, allowed,
    group and help; where that is too wide, the help goes under its row."""
    from ..registry import methods
    from ..spec.schema import DATA, all_engine_settings, settings_table

    sections = [("every training stage (the engine's)", all_engine_settings()),
                ("every benchmark's data (data.KEY: the input of a pretrained backbone)", DATA)]
    sections += [(f"method {e.name} (its own keys)", e.obj.settings) for e in methods.entries() if e.obj.settings]
    headers = ["key", "default", "allowed", "group", "what"]
    for title, settings in sections:
        rows = settings_table(settings)
        table = fit_table(rows, headers, width)
        if wraps(table, rows):  # the help under each row rather than a narrow column of it
            table = fit_table([r[:4] for r in rows], headers[:4], width, details=[r[4] for r in rows])
        print(f"{title}:")
        print(table)
        print()


def _registered(name: str, width: int) -> str:
    """One registry's table: name, what, defaults, origin; where that is too wide, the name and what,
    with the defaults and a short origin ("built-in" or the plugin's distribution) under each row."""
    from ..registry import backbones, benchmarks, methods

    registry = {"methods": methods, "benchmarks": benchmarks, "backbones": backbones}[name]
    rows = [[e.name, *_describe(name, e.obj), e.origin] for e in registry.entries()]
    headers = ["name", "what", "defaults", "origin"]
    table = fit_table(rows, headers, width)
    if not wraps(table, rows):
        return table
    details = ["; ".join(part for part in (defaults, _short_origin(origin)) if part)
               for _, _, defaults, origin in rows]
    return fit_table([r[:2] for r in rows], ["name", "what (below it: defaults; origin)"], width, details=details)


def _describe(kind: str, obj: Any) -> tuple[str, str]:
    if kind == "methods":
        defaults = f"stages: {', '.join(obj.stages)}; recipe: {obj.default_recipe}" + \
            ("" if obj.presentation.in_default_run else "; only with -m NAME|all" if obj.presentation.in_all
             else "; only with -m NAME")
        return getattr(obj, "description", ""), defaults
    if kind == "benchmarks":
        defaults = ", ".join(f"{k}={v}" for k, v in obj.params.items()) + f"; backbone: {obj.default_backbone}"
        return f"{obj.title}, {obj.num_classes or 'its own'} classes", defaults
    if callable(getattr(obj, "details", None)):  # a pretrained backbone: source, parameters, weights here or not
        return obj.summary, obj.details()
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split()), ""


def _short_origin(origin: str) -> str:
    """"builtin (ltbench.methods.ce)" -> "built-in"; "plugin DIST (module:attr)" -> "plugin DIST"."""
    return "built-in" if origin.startswith("builtin") else origin.split(" (")[0]
