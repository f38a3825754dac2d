"""Search spaces: ``--search STAGE.KEY=[log:|int:|choice:]LO..HI`` (repeatable), checked against the schema
(ltbench.spec.schema: each key's type and allowed range) and the stages of the method's run spec.

    stage1.weight_decay=log:1e-4..1e-1   a number, log-uniform (LO above 0)
    train.lr=0.01..0.2                   a number, uniform
    stage2.epochs=int:5..20              an integer (int:log: ... is not needed: log: on an integer key)
    train.schedule=choice:cosine,step    one of the values (any type; typed as --set types them)

A key is written as --set writes it: STAGE.KEY, ``stage1.KEY`` for a decoupled method's stage-1 run, or a
bare KEY when one stage has it. Keys of the benchmark (``data.*``) are not searched. Each method declares
its default space (``Method.search_space``, the same strings); the --search items that address a method
replace its default space.

A sampled number is rounded to 3 significant digits, so that a trial's run id is the one that ``ltbench run
--set KEY=VALUE`` gives for the value it shows, and later trials and runs meet the same runs again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import LtbenchError
from ..spec.schema import Setting, did_you_mean

if TYPE_CHECKING:
    from ..spec.run_spec import RunSpec

FORM = "STAGE.KEY=[log:|int:|choice:]LO..HI (e.g. --search stage1.weight_decay=log:1e-4..1e-1)"
DIGITS = 3  # significant digits of a sampled number


def value_text(value: Any) -> str:
    """A value as --set writes it (0.0032, true, cosine, [0.8,0.9])."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Param:
    """One searched setting: ``key`` as --set writes it (qualified: ``stage1.weight_decay``), a range of
    ``kind`` float or int (``log``: log-uniform), or ``choices`` ((text, typed value) pairs)."""

    key: str
    kind: str  # float | int | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[tuple[str, Any], ...] = ()

    @property
    def text(self) -> str:
        """The range as --search writes it, canonical (the study's identity compares these)."""
        if self.kind == "choice":
            return "choice:" + ",".join(t for t, _ in self.choices)
        prefix = ("log:" if self.log else "") + ("int:" if self.kind == "int" and not self.log else "")
        return f"{prefix}{self.low:g}..{self.high:g}"

    def describe(self) -> str:
        return f"{self.key}={self.text}"

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution([t for t, _ in self.choices])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)

    def rounded(self, value: float) -> float:
        """A sampled number at DIGITS significant digits, inside the range."""
        return min(max(float(f"{value:.{DIGITS}g}"), self.low), self.high)

    def suggest(self, trial: Any) -> Any:
        """This setting's value for an Optuna trial (asked of its sampler, or fixed for a retried trial)."""
        if self.kind == "choice":
            text = trial.suggest_categorical(self.key, [t for t, _ in self.choices])
            return dict(self.choices)[text]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return self.rounded(trial.suggest_float(self.key, self.low, self.high, log=self.log))

    def grid(self, n: int) -> list[Any]:
        """Grid points: every choice (as its text), else ``n`` points spread over the range (log-spaced
        for a log range), rounded as sampled values are."""
        if self.kind == "choice":
            return [t for t, _ in self.choices]
        import numpy as np

        points = np.geomspace(self.low, self.high, n) if self.log else np.linspace(self.low, self.high, n)
        values = [int(round(float(p))) for p in points] if self.kind == "int" else [self.rounded(float(p))
                                                                                    for p in points]
        return list(dict.fromkeys(values))

    def value_of(self, param: Any) -> Any:
        """The setting's value from an Optuna trial's param (a choice's text -> its typed value)."""
        return dict(self.choices)[param] if self.kind == "choice" else param


def grid_space(params: list[Param], trials: int) -> dict[str, list[Any]]:
    """The grid of ``--sampler grid``: every choice, and ranges with n points each, n the largest that
    keeps the grid within ``trials`` points (at least 2)."""
    fixed = math.prod(len(p.choices) for p in params if p.kind == "choice")
    ranges = [p for p in params if p.kind != "choice"]
    n = max(2, math.floor((trials / fixed) ** (1 / len(ranges)) + 1e-9)) if ranges else 0
    return {p.key: p.grid(n) for p in params}


# ----------------------------------------------------------------------------------- parsing


def split_item(item: str, option: str = "--search") -> tuple[str, str]:
    """'KEY=RANGE' -> (KEY, RANGE); a malformed item is one line naming it and the form."""
    key, eq, rhs = item.partition("=")
    key, rhs = key.strip(), rhs.strip()
    if not eq or not key or not rhs or key.startswith(".") or key.endswith("."):
        raise LtbenchError(f"{option} {item!r}: expected {FORM}.")
    return key, rhs


def stage_values(spec: RunSpec) -> dict[str, dict[str, Any]]:
    """The stages a user addresses in --set, with their values: stage1 (a decoupled method's stage-1 run)
    and the run's own stages."""
    parent = spec.parent_spec()
    return {**({"stage1": dict(parent.stages["train"])} if parent is not None else {}),
            **{st: dict(hp) for st, hp in spec.stages.items()}}


def qualify(key: str, spec: RunSpec, option: str = "--search") -> str | None:
    """STAGE.KEY for ``key`` in this run spec, or None when no stage of it has the key (a bare key in
    several stages, or a key of the benchmark, is an error)."""
    stages = stage_values(spec)
    stage, dot, name = key.rpartition(".")
    if stage == "data":
        raise LtbenchError(f"{option} {key}: a parameter of the benchmark, not a setting that a method trains; "
                           "tune searches the settings of the training stages (--set data.KEY fixes it).")
    if dot:
        return key if name in stages.get(stage, {}) else None
    holders = [st for st, hp in stages.items() if key in hp]
    if len(holders) > 1:
        raise LtbenchError(f"{option} {key}: {spec.method} has {key!r} in {' and '.join(holders)}; say which, "
                           f"e.g. --search {holders[0]}.{key}=...")
    return f"{holders[0]}.{key}" if holders else None


def unknown_key(key: str, specs: list[RunSpec], option: str = "--search") -> LtbenchError:
    """The error for a key that no method's stages have, with a did-you-mean and the keys they do have."""
    known = sorted({f"{st}.{k}" for s in specs for st, hp in stage_values(s).items() for k in hp})
    stage, dot, name = key.rpartition(".")
    names = ", ".join(sorted({s.method for s in specs}))
    stages = sorted({st for s in specs for st in stage_values(s)})
    if dot and stage not in stages:
        return LtbenchError(f"{option} {key}: {names} {'has' if len(specs) == 1 else 'have'} no stage {stage!r} "
                            f"(stages: {', '.join(stages)}); the stage trains nothing that {key} could set.")
    hint = did_you_mean(key, known) or did_you_mean(name, {k.split('.', 1)[1] for k in known})
    return LtbenchError(f"{option} {key}: no stage of {names} has this key{hint}. Known keys: {', '.join(known)}.")


def setting_for(qkey: str, spec: RunSpec) -> Setting:
    """The declared setting of a qualified key (the engine's, or the method's own), else one typed by its
    value in the spec."""
    from ..registry import methods
    from ..spec.run_spec import setting_of

    stage, _, name = qkey.partition(".")
    method = methods.get(spec.method)
    owner = methods.get(method.stage1) if stage == "stage1" else method
    return setting_of(name, stage_values(spec)[stage][name], {s.key: s for s in owner.settings})


def make_param(qkey: str, rhs: str, setting: Setting, item: str, option: str = "--search") -> Param:
    """A Param from the range text ``rhs`` of a qualified key, checked against the key's setting."""
    where = f"{option} {item!r}"
    if rhs.startswith("choice:"):
        return _choice(qkey, rhs[len("choice:"):], setting, where)
    text, log, as_int = rhs, False, False
    for prefix in ("log:", "int:"):
        while text.startswith(prefix):
            text, log, as_int = text[len(prefix):], log or prefix == "log:", as_int or prefix == "int:"
    if setting.kind not in ("float", "int"):
        kind = {"bool": "true/false", "str": "a string", "floats": "a list"}.get(setting.kind, "a non-numeric")
        example = ",".join(setting.choices[:2]) if setting.choices else "true,false" if setting.kind == "bool" else "..."
        raise LtbenchError(f"{where}: {qkey} is {kind} setting, not a number; search it with "
                           f"{qkey}=choice:{example}.")
    if as_int and setting.kind != "int":
        raise LtbenchError(f"{where}: int: is for integer settings; {qkey} is a number (drop int:).")
    lo, hi = _bounds(text, setting.kind == "int", where)
    if lo >= hi:
        raise LtbenchError(f"{where}: the range {text} is empty; LO must be below HI (a single value is --set "
                           f"{qkey}=VALUE).")
    if log and lo <= 0:
        raise LtbenchError(f"{where}: a log range must lie above 0, and {lo:g}..{hi:g} includes "
                           f"{'0' if lo == 0 else 'values below 0'}; start it above 0 (e.g. log:1e-5..{hi:g}), or "
                           f"try 0 itself with {qkey}=choice:0,...")
    for bound in (lo, hi):
        problem = setting.problem(int(bound) if setting.kind == "int" else bound)
        if problem:
            raise LtbenchError(f"{where}: {qkey.rpartition('.')[0]}.{problem}; keep the range inside what "
                               f"{qkey} allows ({setting.range_text}).")
    return Param(qkey, setting.kind, lo, hi, log)


def _bounds(text: str, integer: bool, where: str) -> tuple[float, float]:
    lo_text, sep, hi_text = text.partition("..")
    if not sep or not lo_text.strip() or not hi_text.strip():
        raise LtbenchError(f"{where}: expected a range LO..HI after the key (e.g. log:1e-4..1e-1), or "
                           "choice:A,B,...")
    out = []
    for part in (lo_text.strip(), hi_text.strip()):
        try:
            value = float(part)
        except ValueError:
            raise LtbenchError(f"{where}: {part!r} is not a number; write the range as LO..HI with numbers "
                               "(or choice:A,B,... for other values).") from None
        if not math.isfinite(value):
            raise LtbenchError(f"{where}: {part!r} is not a finite number.")
        if integer and not value.is_integer():
            raise LtbenchError(f"{where}: {part!r} is not an integer, and this setting takes integers.")
        out.append(value)
    return out[0], out[1]


def _choice(qkey: str, text: str, setting: Setting, where: str) -> Param:
    from ..launch.sweep import split_values
    from ..spec.run_spec import parse_value

    values = split_values(text)
    if not text.strip() or "" in values:
        raise LtbenchError(f"{where}: choice: needs values separated by commas (e.g. choice:cosine,step), "
                           "none of them empty.")
    typed = {}
    for v in values:
        value = setting.parse(f"{where}: {qkey}", parse_value(v))
        typed.setdefault(value_text(value), value)
    if len(typed) < 2:
        raise LtbenchError(f"{where}: choice: needs two or more different values (one value is --set "
                           f"{qkey}={values[0]}).")
    return Param(qkey, "choice", choices=tuple(typed.items()))


def space_for(spec: RunSpec, items: list[str]) -> list[Param]:
    """The searched settings of one run spec (one method on one benchmark): the --search ``items`` that
    address its stages, else the space its method declares (``Method.search_space``). A key given twice
    is an error; an item that addresses no stage of this spec is left to the caller (``unknown_key``)."""
    from ..registry import methods

    parsed = [(*split_item(item), item) for item in items]
    mine = [(q, rhs, item) for key, rhs, item in parsed if (q := qualify(key, spec)) is not None]
    option = "--search"
    if not mine:
        option = f"{spec.method}'s search_space"
        declared = methods.get(spec.method).search_space
        if not declared:
            raise LtbenchError(f"{spec.method} declares no search space (Method.search_space); name one with "
                               f"--search {FORM.split(' (')[0]}.")
        for key, rhs, item in [(*split_item(i, option), i) for i in declared]:
            q = qualify(key, spec, option)
            if q is None:
                raise unknown_key(key, [spec], option)
            mine.append((q, rhs, item))
    params: dict[str, Param] = {}
    for q, rhs, item in mine:
        if q in params:
            raise LtbenchError(f"--search {q}: given twice; give one range per key.")
        params[q] = make_param(q, rhs, setting_for(q, spec), item, option)
    return list(params.values())
