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
import functools
import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import LtbenchError
from .run_spec import Override, RunSpec, parse_value

# selector -> the command-line flag whose place it takes (its value wins over the file's)
SELECTORS: dict[str, str] = {"method": "--method", "dataset": "--dataset", "backbone": "--backbone",
                             "imbalance": "--imbalance", "recipe": "--recipe", "seed": "--seed",
                             "epochs": "--epochs"}
ALIASES = {"seeds": "seed", "methods": "method", "benchmark": "dataset"}
SUFFIXES = (".yaml", ".yml", ".toml")
# Limits on a file, checked before anything is built from it: a config is a few dozen lines (the shipped
# ones are under 2 KiB); a YAML alias bomb (aliases of aliases) stops at MAX_VALUES, values counted with
# their aliases expanded; a config needs 3 levels (key, a stage's key, a list of values).
MAX_BYTES = 64 * 1024
MAX_VALUES = 10_000
MAX_DEPTH = 16
# what a file name that is not a regular file names (find_config's message)
NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def shipped_root() -> Path:
    """The shipped configs: ``ltbench/configs`` in an installed copy (package data), ``configs/`` beside
    the package in a checkout."""
    here = Path(__file__).resolve().parent.parent  # ltbench/
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
    if not str(name).strip() or "\x00" in str(name):
        raise LtbenchError(f"--config {str(name)!r}: is not a file name; name a .yaml, .yml or .toml file.")
    path = Path(name)
    kind = _file_kind(path, name)
    if kind == "file":
        return path
    if kind is not None:
        raise LtbenchError(f"--config {name}: is {kind}, not a file; name a .yaml, .yml or .toml file.")
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


def _file_kind(path: Path, name: str | Path) -> str | None:
    """"file" for a regular file (or a link to one), None for nothing there, else what it is ("a directory")."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a loop of links, a name too long, a folder that cannot be searched
        raise LtbenchError(f"--config {name}: cannot be read ({exc.strerror or exc}); name a readable .yaml, "
                           ".yml or .toml file.") from None
    if stat.S_ISREG(mode):
        return "file"
    return next((what for test, what in NOT_FILES if test(mode)), "something other than a file")


def load_config(name: str | Path) -> Config:
    """Read, parse and check a config file (module docstring); one LtbenchError naming the file (and
    the line, where the parser or the YAML key gives it) for anything wrong."""
    path = find_config(name)
    label = str(name)
    if path.suffix not in SUFFIXES:
        raise LtbenchError(f"config {label}: unknown file type {path.suffix or '(none)'!r}; a config file ends "
                           "in .yaml, .yml (YAML) or .toml (TOML).")
    text = _read(path, label)
    data, lines = _parse_toml(text, label) if path.suffix == ".toml" else _parse_yaml(text, label)
    if data is not None and not isinstance(data, dict):
        raise LtbenchError(f"config {label}: expected keys and values at the top level (e.g. 'method: wb'), "
                           f"found {_kind(data)}.")
    if not data:
        raise LtbenchError(f"config {label}: is empty (no keys); give it at least one (e.g. 'method: wb'), "
                           "or leave --config out.")
    return _checked(label, path, data, lines)


def _kind(value: Any) -> str:
    name = type(value).__name__
    return {"str": "a string", "int": "a number", "float": "a number", "bool": "true/false", "list": "a list",
            "date": "a date", "datetime": "a date"}.get(name, f"a {name}")


def _read(path: Path, label: str) -> str:
    """The text of ``path``: a regular file (checked on the open file: a FIFO put in its place does not
    block) of at most MAX_BYTES, UTF-8, a leading byte-order mark dropped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            data = f.read(MAX_BYTES + 1) if regular else b""
    except OSError as exc:
        raise LtbenchError(f"config {label}: cannot be read ({exc.strerror or exc}).") from None
    if not regular:
        raise LtbenchError(f"config {label}: is not a regular file; name a .yaml, .yml or .toml file.")
    if len(data) > MAX_BYTES:
        raise LtbenchError(f"config {label}: is larger than {MAX_BYTES // 1024} KiB, too large for a config (a "
                           "few keys and values); check that it is the right file.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LtbenchError(f"config {label}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); "
                           "save the file as UTF-8.") from None
    return text.removeprefix("\ufeff")


def _parse_toml(text: str, label: str) -> tuple[Any, dict[str, int]]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise LtbenchError(f"config {label}: not valid TOML: {exc}.") from None
    except ValueError as exc:  # a number past Python's limit of 4300 digits
        raise LtbenchError(f"config {label}: not valid TOML: a value cannot be read ({str(exc).split(';')[0]}); "
                           "shorten it.") from None
    except RecursionError:
        raise _too_deep(label) from None
    if _depth(data) > MAX_DEPTH:
        raise _too_deep(label)
    return data, {}


def _depth(value: Any, level: int = 1) -> int:
    """How deep ``value`` nests (lists and tables), counted up to MAX_DEPTH + 1."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    if level > MAX_DEPTH:
        return level
    return max((_depth(child, level + 1) for child in children), default=level)


def _too_deep(label: str, line: int | None = None) -> LtbenchError:
    return LtbenchError(f"config {label}" + (f", line {line}" if line else "") + f": nested more than {MAX_DEPTH} "
                        "levels deep; a config holds keys, a stage's table of keys, and values or lists of values.")


def _parse_yaml(text: str, label: str) -> tuple[Any, dict[str, int]]:
    """The YAML document (safe_load: plain data only) and the line of every key ("stage2.lr" -> 7). The
    composed document is checked (``_YamlCheck``) before anything is built from it."""
    import yaml

    loader = None
    try:
        loader = _yaml_loader()(text)  # checks the characters first
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = _YamlCheck(label).walk(node)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, label, text) from None
    except RecursionError:  # the parser recurses per level: nesting past Python's limit
        raise _too_deep(label) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_error(exc: Any, label: str, text: str) -> LtbenchError:
    import yaml

    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: its position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        what = f"a control character (U+{exc.character:04X}) that YAML does not allow; remove it"
    return LtbenchError(f"config {label}" + (f", line {line}" if line else "") + f": not valid YAML: {what}.")


@functools.cache
def _yaml_loader() -> type:
    """PyYAML's SafeLoader (the pure-Python one: libyaml's crashes on deep nesting) whose value errors
    (a date 2020-13-45, '!!int abc', a 5000-digit number) are YAML errors at their line, not tracebacks."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
                value = repr(node.value[:40]) if isinstance(node.value, str) else "a value"
                why = f" ({str(exc).split(';')[0]})" if isinstance(exc, (ArithmeticError, ValueError)) else ""
                what = f"cannot read {value} as {node.tag.rpartition(':')[2]}{why}"
                raise yaml.constructor.ConstructorError(None, None, what, node.start_mark) from None

    return Loader


# what YAML reads a plain key as, when not a string (`1: 2`, `~: 1`, `on: 1`)
YAML_KEY_TYPES = {"int": "a number", "float": "a number", "bool": "true/false", "null": "null (nothing)",
                  "timestamp": "a date"}


class _YamlCheck:
    """A walk over a composed YAML document, before anything is built from it: every key a string, none
    twice in one table, no merge keys ('<<'), no alias inside the value its anchor marks, at most
    MAX_DEPTH levels and MAX_VALUES values with the aliases expanded (an alias bomb stops there).
    ``walk`` returns the line of every key ("stage2.lr" -> 7)."""

    def __init__(self, label: str):
        self.label, self.count, self.open, self.lines = label, 0, set(), {}

    def fail(self, node: Any, what: str) -> LtbenchError:
        return LtbenchError(f"config {self.label}, line {node.start_mark.line + 1}: {what}.")

    def walk(self, node: Any, prefix: str | None = "", depth: int = 1) -> dict[str, int]:
        import yaml

        self.count += 1
        if self.count > MAX_VALUES:
            raise LtbenchError(f"config {self.label}: holds more than {MAX_VALUES} values (an alias *name counted as "
                               "the values it repeats); a config is a few keys and values: check that it is the "
                               "right file, and use fewer aliases.")
        if depth > MAX_DEPTH:
            raise _too_deep(self.label, node.start_mark.line + 1)
        if id(node) in self.open:
            raise self.fail(node, "an alias (*name) stands inside the value its anchor (&name) marks, which makes "
                                  "it endless; write the value out")
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self.mapping(node, prefix, depth)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self.walk(item, None, depth + 1)
        self.open.discard(id(node))
        return self.lines

    def mapping(self, node: Any, prefix: str | None, depth: int) -> None:
        seen: dict[str, int] = {}
        for key, value in node.value:
            self.key(key)
            line = key.start_mark.line + 1
            if key.value in seen:
                raise self.fail(key, f"the key {key.value!r} is given twice (lines {seen[key.value]} and {line}); "
                                     "keep one")
            seen[key.value] = line
            name = None if prefix is None else f"{prefix}{key.value}"
            if name is not None:
                self.lines[name] = line
            self.walk(value, None if name is None else f"{name}.", depth + 1)

    def key(self, key: Any) -> None:
        import yaml

        tag = key.tag.rpartition(":")[2]
        if isinstance(key, yaml.ScalarNode) and tag == "str":
            return
        if tag == "merge":
            raise self.fail(key, "'<<' (a YAML merge key) is not supported in a config; write the keys out")
        if not isinstance(key, yaml.ScalarNode):
            raise self.fail(key, f"a key is a {'list' if isinstance(key, yaml.SequenceNode) else 'table'}; a key is "
                                 "a name (method, stage2, stage2.lr, ...)")
        raise self.fail(key, f"the key {key.value!r} is not a name: YAML reads it as "
                             f"{YAML_KEY_TYPES.get(tag, repr(key.tag))}; quote it (\"{key.value}\": ...) or name a "
                             "selector or a setting")


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
