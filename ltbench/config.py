"""Config files: `ltbench run|sweep --config FILE` and ``ltbench.run(config=FILE)``.

A config file (YAML: .yaml/.yml, read with PyYAML; TOML: .toml, read with the standard library's
tomllib) holds the selectors of the command line and the keys of --set:

    method: wb                  # selectors: method, dataset, backbone, imbalance, recipe, seed, epochs
    dataset: cifar100_lt        #   (method/dataset/seed: one value, a list, or "a,b")
    imbalance: 100
    stage1:                     # a stage's table: the same as --set stage1.weight_decay=5e-3
      weight_decay: 5e-3
    stage2.lr: 0.01             # STAGE.KEY, data.KEY or KEY, as in --set
    data.subset: cao

Order of merging: the engine's defaults, the recipe and the method as always, then the config file,
then the command line. A selector given both in the file and by a flag takes the flag's value; a
key given both in the file and by --set takes the --set value (the only duplicate allowed: the same
key twice in one file, or in two --set, is an error). The values are typed like --set values (a
string such as "5e-3" reads as a number, as on the command line), so a config and the equivalent
flags resolve to the same spec and the same run id; spec.json records "config NAME" as the origin
of the values the file set.

A name that is not a file names a shipped config (``configs/`` of the repository, installed as
package data): ``--config wb/cifar100_ir100`` (``shipped_configs()`` lists them).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import LtbenchError
from .specs import Override, RunSpec, parse_value

# selector -> the command-line flag whose place it takes (its value wins over the file's)
SELECTORS: dict[str, str] = {"method": "--method", "dataset": "--dataset", "backbone": "--backbone",
                             "imbalance": "--imbalance", "recipe": "--recipe", "seed": "--seed",
                             "epochs": "--epochs"}
ALIASES = {"seeds": "seed", "methods": "method", "benchmark": "dataset"}
SUFFIXES = (".yaml", ".yml", ".toml")


def shipped_root() -> Path:
    """The shipped configs: ``ltbench/configs`` in an installed copy (package data), ``configs/`` beside
    the package in a checkout."""
    here = Path(__file__).resolve().parent
    inside = here / "configs"
    return inside if inside.is_dir() else here.parent / "configs"


def shipped_configs() -> list[str]:
    """The names of the shipped configs (``wb/cifar100_ir100``), sorted."""
    root = shipped_root()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*") if p.suffix in SUFFIXES)


def shipped_summaries() -> list[tuple[str, str]]:
    """(name, the first line of its leading comment) of every shipped config."""
    root = shipped_root()
    out = []
    for name in shipped_configs():
        path = next(root.glob(f"{name}.*"))
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        out.append((name, first))
    return out


@dataclass(frozen=True)
class Config:
    """A config file, read and checked: its selectors (normalised: method, dataset and seed as lists)
    and its settings as --set overrides whose origin is "config NAME"."""

    name: str  # as the user gave it (a path or a shipped name); messages and origins use it
    path: Path
    selectors: dict[str, Any]
    overrides: list[Override]

    @property
    def origin(self) -> str:
        return f"config {self.name}"


def find_config(name: str | Path) -> Path:
    """The file that ``name`` means: a path, else a shipped config (with or without its suffix)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.exists():
        raise LtbenchError(f"--config {name}: is a directory; name a .yaml, .yml or .toml file.")
    root = shipped_root()
    for suffix in ("", *SUFFIXES):
        candidate = root / f"{name}{suffix}"
        if str(name) and candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
            return candidate
    shipped = shipped_configs()
    close = difflib.get_close_matches(str(name), shipped, n=1)
    raise LtbenchError(f"--config {name}: no such file, and no shipped config of that name"
                       + (f" (did you mean {close[0]}?)" if close else "")
                       + f"; the shipped ones are {', '.join(shipped) or 'none'}.")


def load_config(name: str | Path) -> Config:
    """Read, parse and check a config file (module docstring); one LtbenchError naming the file (and
    the line, where the parser or the YAML key gives it) for anything wrong."""
    path = find_config(name)
    label = str(name)
    if path.suffix not in SUFFIXES:
        raise LtbenchError(f"config {label}: unknown file type {path.suffix or '(none)'!r}; a config file ends "
                           "in .yaml, .yml (YAML) or .toml (TOML).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LtbenchError(f"config {label}: cannot be read ({why}).") from None
    data, lines = _parse_toml(text, label) if path.suffix == ".toml" else _parse_yaml(text, label)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LtbenchError(f"config {label}: expected keys and values at the top level (e.g. 'method: wb'), "
                           f"found a {type(data).__name__}.")
    return _checked(label, path, data, lines)


def _parse_toml(text: str, label: str) -> tuple[Any, dict[str, int]]:
    import tomllib

    try:
        return tomllib.loads(text), {}
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise LtbenchError(f"config {label}: not valid TOML: {exc}.") from None


def _parse_yaml(text: str, label: str) -> tuple[Any, dict[str, int]]:
    """The YAML document (safe_load: plain data only) and the line of every key ("stage2.lr" -> 7)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise LtbenchError(f"config {label}{where}: not valid YAML: {what}.") from None
    return data, _yaml_lines(node)


def _yaml_lines(node: Any, prefix: str = "") -> dict[str, int]:
    import yaml

    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            lines[name] = key.start_mark.line + 1
            lines.update(_yaml_lines(value, f"{name}."))
    return lines


def _checked(label: str, path: Path, data: dict[str, Any], lines: dict[str, int]) -> Config:
    """Split the top level into selectors and settings (a table of a stage: STAGE.KEY each)."""
    selectors: dict[str, Any] = {}
    overrides: list[Override] = []
    origin = f"config {label}"

    def where(key: str) -> str:
        return f"config {label}" + (f", line {lines[key]}" if key in lines else "")

    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name in SELECTORS:
            if name in selectors:
                raise LtbenchError(f"{where(key)}: {name!r} is given twice (as {name} and {key}); keep one.")
            selectors[name] = _selector(name, value, where(key))
            continue
        close = difflib.get_close_matches(key, SELECTORS, n=1, cutoff=0.8)
        if close and not isinstance(value, dict):
            raise LtbenchError(f"{where(key)}: unknown key {key!r}; did you mean {close[0]!r}? The keys are the "
                               f"selectors ({', '.join(SELECTORS)}) and the keys of --set (STAGE.KEY, data.KEY, KEY).")
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            full = key if sub is None else f"{key}.{sub}"
            if isinstance(v, dict):
                raise LtbenchError(f"{where(full)}: {full!r} holds a table; a setting is STAGE.KEY (a table of "
                                   "one stage's keys at most: 'stage2: {lr: 0.01}').")
            stage, _, short = full.rpartition(".")
            value_text = v if isinstance(v, str) else json.dumps(v, default=str)
            item = f"line {lines[full]}: {full}={value_text}" if full in lines else f"{full}={value_text}"
            overrides.append(Override(stage or None, short, _value(v, where(full), full), item, origin))
    return Config(label, path, selectors, overrides)


def _value(v: Any, where: str, key: str) -> Any:
    """A setting's value, typed as --set types it: strings are read like --set values ("5e-3" is a number)."""
    if isinstance(v, str):
        return parse_value(v.strip())
    if isinstance(v, list):
        return [_value(x, where, key) for x in v]
    if v is None or isinstance(v, (bool, int, float)):
        return v
    raise LtbenchError(f"{where}: {key}={v!r}: expected a number, a string, true/false or a list "
                       f"(found a {type(v).__name__}).")


def _selector(name: str, value: Any, where: str) -> Any:
    """A selector's value, checked and normalised: method/dataset a list of names, seed a list of ints,
    imbalance a float, epochs an int, backbone/recipe a name."""
    def bad(expected: str) -> LtbenchError:
        return LtbenchError(f"{where}: {name}={value!r}: expected {expected}.")

    if name in ("method", "dataset"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
            raise bad("a name or a list of names (e.g. [ce, wb])")
        return [x.strip() for x in items]
    if name == "seed":
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
        seeds = [parse_value(x.strip()) if isinstance(x, str) else x for x in items]
        if not seeds or not all(type(s) is int for s in seeds):
            raise bad("an integer or a list of integers (e.g. [0, 1, 2])")
        return seeds
    if name in ("imbalance", "epochs"):
        number = parse_value(value.strip()) if isinstance(value, str) else value
        if name == "epochs" and (type(number) is not int):
            raise bad("an integer")
        if name == "imbalance" and (isinstance(number, bool) or not isinstance(number, (int, float))):
            raise bad("a number")
        return number if name == "epochs" else float(number)
    if not isinstance(value, str) or not value.strip():
        raise bad("a name")
    return value.strip()


# What a flag sets that a file may also set as a key: --imbalance is data.imbalance, --epochs the epochs
# of the first training stage (train.epochs, or stage1.epochs of a decoupled method).
FLAG_KEYS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "imbalance": ("imbalance", (None, "data")), "epochs": ("epochs", (None, "train", "stage1"))}


def merged(cfg: Config | None, flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[Override]]:
    """The selectors after merging (a flag's value, not None, wins over the file's), the origins to
    rename in the resolved specs ("--epochs" -> "config NAME" when the file gave the epochs, ...), and the
    file's settings less those that a given flag sets (``FLAG_KEYS``: --epochs wins over stage1.epochs)."""
    if cfg is None:
        return dict(flags), {}, []
    out, renamed = dict(flags), {}
    for name, value in cfg.selectors.items():
        if out.get(name) is None:
            out[name] = value
            renamed[SELECTORS[name]] = cfg.origin
    taken = [FLAG_KEYS[name] for name, value in flags.items() if value is not None and name in FLAG_KEYS]
    overrides = [o for o in cfg.overrides if not any(o.key == key and o.stage in stages for key, stages in taken)]
    return out, renamed, overrides


def relabel(spec: RunSpec, renamed: dict[str, str]) -> RunSpec:
    """``spec`` with the origins that ``merged`` renames (origins are not hashed: the run id stays)."""
    if not renamed:
        return spec
    return replace(spec, origins={k: renamed.get(o, o) for k, o in spec.origins.items()},
                   parent_origins={k: renamed.get(o, o) for k, o in spec.parent_origins.items()})
