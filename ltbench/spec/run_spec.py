"""Run specs: the frozen, complete description of a run, and its content-addressed id.

Paths, devices, worker counts and cluster settings are never part of a spec, so moving data or
changing GPUs never orphans a result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from .. import PROTOCOL_VERSION
from ..data.benchmark import Benchmark
from ..errors import LtbenchError
from ..method import Method
from ..registry import backbones, benchmarks, methods
from .inputs import check_input, data_defaults, pretrained_defaults
from .recipes import recipe_for
from .schema import (
    BY_KEY,
    DATA_BY_KEY,
    ENGINE,
    GROUPS,
    SINCE,
    UNSET,
    Setting,
    Settings,
    did_you_mean,
    engine_defaults,
    group_defaults,
    hashed,
    stage_problems,
)


@dataclass(frozen=True)
class RunSpec:
    benchmark: str
    data: dict[str, Any]
    method: str
    backbone: str
    recipe: str
    seed: int
    stages: dict[str, dict[str, Any]]
    parent: dict[str, Any] | None = None  # canonical spec of the stage-1 run a decoupled method builds on
    init: str | None = None  # "sha256:<hex>" of the initial backbone weights, when not a random init
    # a pretrained backbone's weights when not its library's (--set backbone.weights): "sha256:<hex>" of a file,
    # or "none" (random init); None: the library's weights (ltbench.models.pretrained)
    weights: str | None = None
    protocol: int = PROTOCOL_VERSION
    origins: dict[str, str] = field(default_factory=dict, compare=False)  # not hashed
    parent_origins: dict[str, str] = field(default_factory=dict, compare=False)  # the stage-1 run's origins

    def __post_init__(self) -> None:  # typed access to the values: spec.stages["train"].lr, spec.data.imbalance
        object.__setattr__(self, "data", Settings(self.data))
        object.__setattr__(self, "stages", {st: Settings(hp) for st, hp in self.stages.items()})

    def canonical(self) -> dict[str, Any]:
        """What the run id hashes: the spec without the keys added after protocol 1 that are at the
        value earlier runs had (schema.SINCE)."""
        out = {
            "protocol": self.protocol, "benchmark": self.benchmark, "data": hashed(self.data),
            "method": self.method, "backbone": self.backbone, "recipe": self.recipe, "seed": self.seed,
            "stages": {st: hashed(hp) for st, hp in self.stages.items()}, "parent": self.parent,
        }
        if self.init is not None:
            out["init"] = self.init
        if self.weights is not None:
            out["weights"] = self.weights
        return out

    @property
    def run_id(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def parent_spec(self) -> RunSpec | None:
        """The spec of the stage-1 run this run builds on (None for a one-stage run)."""
        if self.parent is None:
            return None
        parent = RunSpec.from_json(self.parent)  # canonical: engine keys added later are left out at their default
        added = {s.key: s.since for s in ENGINE if s.since is not UNSET}
        stages = {st: {**added, **hp} for st, hp in parent.stages.items()}  # back in, as a resolved spec has them
        return replace(parent, stages=stages, origins=dict(self.parent_origins))

    @property
    def parent_id(self) -> str | None:
        parent = self.parent_spec()
        return parent.run_id if parent is not None else None

    def label(self) -> str:
        return benchmarks.get(self.benchmark)().label(self.data)

    def to_json(self) -> dict[str, Any]:
        """spec.json: every resolved value (also those that the run id leaves out at their default), the
        run id, and where each value came from."""
        out = {**self.canonical(), "data": self.data, "stages": self.stages, "run_id": self.run_id,
               "origins": self.origins}
        if self.parent_origins:
            out["parent_origins"] = self.parent_origins
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> RunSpec:
        return RunSpec(
            benchmark=d["benchmark"], data=d["data"], method=d["method"], backbone=d["backbone"],
            recipe=d["recipe"], seed=d["seed"], stages=d["stages"], parent=d.get("parent"), init=d.get("init"),
            weights=d.get("weights"),
            protocol=d.get("protocol", PROTOCOL_VERSION), origins=d.get("origins", {}),
            parent_origins=d.get("parent_origins", {}),
        )


def flat_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec (as in spec.json) by the names a user writes: backbone, recipe, data.KEY, STAGE.KEY, and
    stage1.KEY for the stage-1 run a decoupled method builds on."""
    out: dict[str, Any] = {"backbone": spec["backbone"], "recipe": spec["recipe"]}
    if spec.get("weights"):
        out["backbone.weights"] = spec["weights"]
    out.update({f"data.{k}": v for k, v in spec["data"].items()})
    for stage, hp in spec["stages"].items():
        out.update({f"{stage}.{k}": v for k, v in hp.items()})
    if spec.get("parent"):
        out.update({f"stage1.{k}": v for k, v in spec["parent"]["stages"]["train"].items()})
    return out


def differences(specs: list[dict[str, Any]], ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """For each spec, the settings (``flat_settings``) whose values are not the same across ``specs``:
    what tells these runs apart (seeds aside)."""
    flats = [{k: v for k, v in flat_settings(s).items() if k not in ignore} for s in specs]
    keys = sorted(set().union(*flats)) if flats else []

    def value(flat: dict[str, Any], key: str) -> Any:  # a key a canonical spec left out is at its default
        return flat[key] if key in flat else SINCE.get(key.rsplit(".", 1)[-1])

    varying = [k for k in keys if len({json.dumps(value(f, k), sort_keys=True) for f in flats}) > 1]
    return [{k: value(f, k) for k in varying if k in f or k.rsplit(".", 1)[-1] in SINCE} for f in flats]


def non_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The settings of a spec (``flat_settings``) that differ from what its method, benchmark and
    recipe give by default: what a user chose (--set, --epochs, --imbalance, --backbone, a grid), and
    the recipe when it is not the method's own. Empty when the defaults cannot be resolved (e.g. a
    plugin that is no longer installed)."""
    try:
        default = resolve(spec["method"], spec["benchmark"], recipe=spec["recipe"]).to_json()
    except LtbenchError:
        return {}
    mine, base = flat_settings(spec), flat_settings(default)
    out = {k: v for k, v in mine.items() if k not in base or base[k] != v}
    if spec["recipe"] == methods.get(spec["method"]).default_recipe:
        out.pop("recipe", None)
    else:
        out = {"recipe": spec["recipe"], **out}
    return out


def format_settings(settings: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in settings.items())


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, lists, null), else a bare string;
    a comma-separated list of numbers is a list."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(t) for t in text.split(",")]
    return text


def coerce(where: str, value: Any, default: Any) -> Any:
    """``value`` typed like ``default`` (a setting declared by its default only), or an LtbenchError."""
    return Setting(where.rsplit(".", 1)[-1], default, "").parse(where, value)


def setting_of(key: str, default: Any, own: dict[str, Setting] | None = None) -> Setting:
    """The declared setting ``key`` (the engine's, or a method's or benchmark's own in ``own``), else
    one typed by its ``default``."""
    return BY_KEY.get(key) or (own or {}).get(key) or Setting(key, default, "")


class Override(NamedTuple):
    """One --set: its stage (None: find the stage that has the key), key, parsed value, the text the
    user typed (for messages), and where it came from ("--set", or "config FILE": a config file's
    value, which a --set of the same key replaces)."""

    stage: str | None
    key: str
    value: Any
    item: str
    origin: str = "--set"

    @property
    def where(self) -> str:
        """How messages name it: "--set 'train.lr=x'" or "config FILE, line 3: train.lr=x"."""
        return f"--set {self.item!r}" if self.origin == "--set" else f"{self.origin}, {self.item}"


MAX_SEED = 2**63 - 1


def parse_sets(sets: list[str | Override]) -> list[Override]:
    out = []
    for item in sets:
        if isinstance(item, Override):  # already parsed (a config file's value)
            out.append(item)
            continue
        lhs, eq, rhs = item.partition("=")
        lhs = lhs.strip()
        stage, dot, key = lhs.rpartition(".")
        if dot and not stage:
            raise LtbenchError(f"--set {item!r}: nothing before the '.'; name the stage (e.g. --set train.{key}=...) "
                               f"or drop the dot (--set {key}=...).")
        if not eq or not key or rhs.strip() == "":
            raise LtbenchError(f"--set {item!r}: expected stage.key=value (or key=value), e.g. --set train.lr=0.05.")
        out.append(Override(stage or None, key, parse_value(rhs.strip()), item))
    return out


def resolve(method: str, benchmark: str, *, backbone: str | None = None, recipe: str | None = None,
            imbalance: float | None = None, epochs: int | None = None, sets: list[str] | None = None,
            seed: int = 0, stage1_run: dict[str, Any] | None = None, init_weights: Path | None = None,
            data_root: Path | None = None, split_root: Path | None = None) -> RunSpec:
    """Resolve a run's spec from names and overrides. Raises LtbenchError for anything a user can
    get wrong, before any data is read or any directory is written.

    For a decoupled method (``Method.stage1``), the stage-1 run is resolved too and embedded as
    ``parent``: ``stage1.<key>`` settings go to it, ``--epochs`` sets its epochs, and
    ``stage1_run`` (the spec.json of an existing run) replaces it. ``init_weights``: a file of initial
    backbone weights (its sha256 goes into the spec of the run that starts from it). ``data_root``
    (and ``split_root``): where the data is, for benchmarks whose parameters identify it
    (``Benchmark.data_params``, e.g. an image folder's fingerprint); never part of the spec itself.
    """
    if epochs is not None and epochs < 1:
        raise LtbenchError(f"--epochs {epochs}: must be at least 1 (it sets the epochs of the first training stage).")
    if not 0 <= seed <= MAX_SEED:
        raise LtbenchError(f"--seed {seed}: a seed must lie in 0..{MAX_SEED} (2^63-1).")
    init = _init_id(init_weights)
    m: Method = methods.get(method)()
    weights, overrides = backbone_weights(parse_sets(sets or []))
    if stage1_run is not None and not m.stage1:
        raise LtbenchError(f"--stage1: {method} is a one-stage method; only decoupled methods "
                           f"({', '.join(n for n in methods.names() if methods.get(n).stage1)}) build on a stage-1 run.")
    bound = {} if data_root is None else {"data": (benchmarks.get(benchmark)().data_params(
        Path(data_root), split_root), "--data-root")}  # fixed values of the data's parameters
    if not m.stage1:
        return replace(_resolve_one(method, benchmark, backbone, recipe, imbalance, epochs, overrides, bound, seed),
                       init=init, weights=weights)

    recipe = recipe or m.default_recipe
    b: Benchmark = benchmarks.get(benchmark)()
    stage1_fixed = {"train": (m.stage1_hparams(recipe, b.recipe_family), f"method {method} (stage 1)"), **bound}
    if stage1_run is None:
        plain = _resolve_one(m.stage1, benchmark, backbone, recipe, imbalance, epochs, [], stage1_fixed, seed)
        own = _resolve_one(method, benchmark, plain.backbone, recipe, imbalance, None, [], bound, seed)
        qualified = _qualified(overrides, plain, own)
        parent_sets = [o._replace(stage="train" if o.stage == "stage1" else o.stage) for o in qualified
                       if o.stage in ("stage1", "data")]
        parent = replace(_resolve_one(m.stage1, benchmark, backbone, recipe, imbalance, epochs, parent_sets,
                                      stage1_fixed, seed, names={"train": "stage1"}), init=init, weights=weights)
        own_sets = [o for o in qualified if o.stage not in ("stage1", "data")]
    else:
        if any(st in ("stage1", "data") for st, *_ in overrides) or imbalance is not None or backbone is not None \
                or epochs is not None or init is not None or weights is not None:
            raise LtbenchError("with --stage1 RUN the stage-1 settings, the backbone and the data come from that "
                               "run; drop --imbalance/--backbone/--epochs/--init-weights/--set stage1.*/data.*/backbone.* "
                               "(stage-2 epochs: --set stage2.epochs=N).")
        parent = _given_stage1(stage1_run, m, benchmark)
        own_sets = overrides
    spec = _resolve_one(method, benchmark, parent.backbone, recipe, None, None, own_sets, {}, seed,
                        data=parent.data)
    return RunSpec(benchmark=spec.benchmark, data=spec.data, method=method, backbone=parent.backbone,
                   recipe=spec.recipe, seed=spec.seed, stages=spec.stages, parent=parent.canonical(),
                   origins={**spec.origins, "backbone": "stage-1 run"}, parent_origins=parent.origins)


def _init_id(init_weights: Path | None) -> str | None:
    """The id (sha256) of an --init-weights file, which goes into the spec (None without one)."""
    if init_weights is None:
        return None
    from ..models.backbones import weights_id

    if not Path(init_weights).is_file():
        raise LtbenchError(f"--init-weights {init_weights}: no such file.")
    return weights_id(Path(init_weights))


def backbone_weights(overrides: list[Override]) -> tuple[str | None, list[Override]]:
    """--set backbone.weights=FILE|none out of ``overrides``: the spec's ``weights`` ("sha256:<hex>" of FILE, or
    "none") and the other overrides."""
    own = [o for o in overrides if o.stage == "backbone"]
    for o in own:
        if o.key != "weights" or not isinstance(o.value, str) or not o.value:
            raise LtbenchError(f"{o.where}: the backbone has one setting, weights: --set backbone.weights=FILE (a "
                               "checkpoint of the pretrained backbone) or backbone.weights=none (random init).")
    if len(own) > 1:
        raise LtbenchError(f"{own[-1].where}: backbone.weights is already set by {own[0].where}; keep one of them.")
    rest = [o for o in overrides if o.stage != "backbone"]
    if not own:
        return None, rest
    value = own[0].value
    if value.lower() == "none":
        return "none", rest
    if not Path(value).expanduser().is_file():
        raise LtbenchError(f"{own[0].where}: no such file {value}; pass a checkpoint of the backbone (a state dict, "
                           "an open_clip or timm checkpoint, .pt/.bin/.safetensors) or none (random init).")
    from ..models.pretrained import file_id

    return file_id(Path(value).expanduser()), rest


def backbone_weights_file(sets: list[str | Override]) -> Path | None:
    """The FILE of --set backbone.weights=FILE among ``sets`` (None: not given, or none)."""
    weights = [o for o in parse_sets(sets) if o.stage == "backbone" and o.key == "weights"]
    value = weights[-1].value if weights else None
    return Path(value).expanduser() if isinstance(value, str) and value.lower() != "none" else None


def _qualified(overrides: list[Override], plain: RunSpec, own: RunSpec) -> list[Override]:
    """A decoupled method's --set keys with the stage each one names: a bare key goes to the one place
    that has it (stage1, one of the method's stages, or data); a key in several is refused."""
    qualified = []
    for o in overrides:
        if o.stage is None:
            holders = (["stage1"] if o.key in plain.stages["train"] else []) + \
                [st for st in own.stages if o.key in own.stages[st]] + (["data"] if o.key in plain.data else [])
            if len(holders) > 1:
                raise LtbenchError(f"{o.where}: {o.key!r} exists in {', '.join(holders)}; say which, "
                                   f"e.g. --set {holders[0]}.{o.key}=...")
            o = o._replace(stage=holders[0] if holders else None)
        qualified.append(o)
    return qualified


def _given_stage1(stage1_run: dict[str, Any], m: Method, benchmark: str) -> RunSpec:
    """The spec of the finished stage-1 run that --stage1 names, checked to fit ``m`` on ``benchmark``."""
    parent = RunSpec.from_json(stage1_run)
    mine = benchmarks.get(benchmark)()
    theirs = benchmarks.get(parent.benchmark)()
    if parent.benchmark != benchmark or theirs.num_classes != mine.num_classes:
        raise LtbenchError(
            f"stage-1 run {parent.run_id} was trained on {theirs.label(parent.data)} ({theirs.num_classes} "
            f"classes), but {m.name} was asked to run on {benchmark} ({mine.num_classes} classes); pick a "
            f"stage-1 run of {benchmark}.")
    if parent.method != m.stage1:
        raise LtbenchError(f"stage-1 run {parent.run_id} is a {parent.method} run; {m.name} builds on a "
                           f"{m.stage1} run.")
    return parent


def _apply_sets(overrides: list[Override], stages: dict[str, dict[str, Any]], data: dict[str, Any],
                origins: dict[str, str], method: str, benchmark: str, shown: Callable[[str], str],
                has_stage1: bool, own: dict[str, Setting] | None = None) -> None:
    """Put each --set into its stage (or data), parsed and checked by its setting (the schema's, or
    ``own``: the method's declared ones; else typed like the default it replaces), and record its origin;
    refuse a key no stage has, one that several have, one set twice, and one that the stage's other
    settings make it ignore (``Setting.read_under``)."""
    set_by: dict[str, Override] = {}  # stage.key -> the --set that set it
    for o in overrides:
        stage = o.stage or _holder(o, stages, data, method, benchmark)
        target = data if stage == "data" else stages.get(stage)
        if target is None:
            raise LtbenchError(f"{o.where}: {method} has no stage {stage!r}; its stages are "
                               f"{', '.join(stages)}{' and stage1' if has_stage1 else ''} "
                               f"(and data.* for the benchmark's parameters).")
        group = next((g for g in GROUPS if any(x.key == o.key for x in g.settings)), None)
        if group is not None and group.switch in target:  # a group's settings join a stage when one is set
            _join_group(group, stage, target, origins)
        if o.key not in target:
            raise LtbenchError(f"{o.where}: {shown(stage)} has no key {o.key!r}{did_you_mean(o.key, target)}; "
                               f"known: {', '.join(sorted(target))}.")
        earlier = set_by.get(f"{stage}.{o.key}")
        if earlier is not None and not (earlier.origin != "--set" and o.origin == "--set"):  # --set beats a config
            raise LtbenchError(f"{o.where}: {shown(stage)}.{o.key} is already set by {earlier.where}; keep one of them.")
        set_by[f"{stage}.{o.key}"] = o
        declared = DATA_BY_KEY[o.key] if stage == "data" and o.key in DATA_BY_KEY else \
            setting_of(o.key, target[o.key], own)
        target[o.key] = declared.typed(f"{o.origin} {shown(stage)}.{o.key}", o.value, target[o.key])
        origins[f"{stage}.{o.key}"] = o.origin
    for name, o in set_by.items():
        stage, _, key = name.partition(".")
        _check_read(o, stage, key, stages, shown, own)


def _holder(o: Override, stages: dict[str, dict[str, Any]], data: dict[str, Any], method: str, benchmark: str) -> str:
    """The one stage (or data) that has the key of a --set that names no stage."""
    holders = [s for s in stages if o.key in stages[s]] + (["data"] if o.key in data else [])
    if len(holders) == 1:
        return holders[0]
    if holders:
        raise LtbenchError(f"{o.where}: {o.key!r} exists in {', '.join(holders)}; "
                           f"say which, e.g. --set {holders[0]}.{o.key}=...")
    known = sorted({f"{s}.{k}" for s in stages for k in stages[s]} | {f"data.{k}" for k in data})
    raise LtbenchError(f"{o.where}: no stage of {method} on {benchmark} has a key {o.key!r}"
                       f"{did_you_mean(o.key, {k.split('.', 1)[1] for k in known})}. Known keys: {', '.join(known)}.")


def _check_read(o: Override, stage: str, key: str, stages: dict[str, dict[str, Any]], shown: Callable[[str], str],
                own: dict[str, Setting] | None) -> None:
    """Refuse a --set of a key that the stage's other settings make it ignore (``Setting.read_under``)."""
    s = BY_KEY.get(key) or (own or {}).get(key)
    if s is None or s.read_under is None or stage not in stages:
        return
    other, needed = s.read_under
    if stages[stage].get(other) not in needed:
        text = [json.dumps(v) if isinstance(v, bool) else str(v) for v in (stages[stage][other], *needed)]
        raise LtbenchError(f"{o.where}: {shown(stage)}.{other}={text[0]} ignores {key} "
                           f"(only {other}={' or '.join(text[1:])} reads it); add --set "
                           f"{shown(stage)}.{other}={text[1]}, or drop it.")


def _refuse_epochs_twice(m: Method, epochs: int | None, stages: dict[str, dict[str, Any]], origins: dict[str, str],
                         shown: Callable[[str], str]) -> None:
    """--epochs sets the first training stage's epochs: a --set of the same key as well is a conflict."""
    first = next((st for st in m.stages if m.trains(st)), None)
    if epochs is not None and first is not None and origins.get(f"{first}.epochs") == "--set":
        raise LtbenchError(f"--epochs {epochs} and --set {shown(first)}.epochs={stages[first]['epochs']} both set "
                           f"{shown(first)}.epochs; keep one of them.")


def _join_group(group: Any, stage: str, hp: dict[str, Any], origins: dict[str, str]) -> None:
    """A group's settings (schema.GROUPS, e.g. MaxNorm's) into a stage that lacks them, at their defaults."""
    for k, v in group_defaults(group).items():
        if k not in hp:
            hp[k] = v
            origins[f"{stage}.{k}"] = "engine"


def _stage_values(m: Method, rec: dict[str, Any], recipe: str, b: Benchmark, data: dict[str, Any],
                  fixed: dict[str, tuple[dict[str, Any], str]], epochs: int | None,
                  origins: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every stage's values before --set, in the order that later ones override: the engine's defaults
    (training stages), the recipe, the method (its defaults, then those that follow the data:
    ``Method.data_hparams``), ``fixed`` (e.g. WB's tuned stage-1 weight decay), then --epochs for the
    first training stage; each value's origin goes into ``origins``."""
    stages: dict[str, dict[str, Any]] = {}
    first_training_stage = next((st for st in m.stages if m.trains(st)), None)
    for st in m.stages:
        hp: dict[str, Any] = {}
        src: dict[str, str] = {}
        layers = [(engine_defaults(m.frozen_features(st)), "engine"),
                  (rec.get("stage", {}), f"recipe {recipe}")] if m.trains(st) else []
        layers.append((m.hparams(st, recipe, b.recipe_family), f"method {m.name}"))
        layers.append((m.data_hparams(st, recipe, b.name, data), f"method {m.name} ({b.label(data)})"))
        if st in fixed:
            layers.append(fixed[st])
        if epochs is not None and st == first_training_stage:
            layers.append(({"epochs": epochs}, "--epochs"))
        for values, origin in layers:
            hp.update(values)
            src.update(dict.fromkeys(values, origin))
        stages[st] = hp
        origins.update({f"{st}.{k}": o for k, o in src.items()})
    return stages


def _data_values(b: Benchmark, rec: dict[str, Any], recipe: str, fixed: dict[str, tuple[dict[str, Any], str]],
                 data: dict[str, Any] | None, origins: dict[str, str]) -> dict[str, Any]:
    """The data's values before --imbalance and --set: the engine's input settings (``schema.DATA``), then
    the stage-1 run's (``data``), else the benchmark's, the recipe's and what identifies the data under
    --data-root (``fixed["data"]``), with their origins."""
    inputs = data_defaults()  # the input settings of every benchmark (schema.DATA), after its own parameters
    origins.update({f"data.{k}": "engine" for k in inputs})
    if data is not None:
        origins.update({f"data.{k}": "stage-1 run" for k in data})
        return {**data, **{k: v for k, v in inputs.items() if k not in data}}
    data = dict(b.params)
    origins.update({f"data.{k}": "benchmark" for k in data})
    data.update({k: v for k, v in inputs.items() if k not in data})
    for k, v in rec.get("data", {}).items():
        data[k] = v
        origins[f"data.{k}"] = f"recipe {recipe}"
    values, origin = fixed.get("data", ({}, ""))
    data.update(values)
    origins.update({f"data.{k}": origin for k in values})
    return data


def _resolve_one(method: str, benchmark: str, backbone: str | None, recipe: str | None, imbalance: float | None,
                 epochs: int | None, overrides: list[Override], fixed: dict[str, tuple[dict[str, Any], str]],
                 seed: int, data: dict[str, Any] | None = None, names: dict[str, str] | None = None) -> RunSpec:
    """One run's spec. ``names``: how a user addresses a stage of this run in --set when it differs
    from the stage's own name (a decoupled method's stage 1 is ``train`` inside, ``stage1`` to a user)."""
    m: Method = methods.get(method)()

    def shown(stage: str) -> str:
        return (names or {}).get(stage, stage)

    b: Benchmark = benchmarks.get(benchmark)()
    recipe = recipe or m.default_recipe
    rec = recipe_for(recipe, b.recipe_family, benchmark)
    origins: dict[str, str] = {}

    data = _data_values(b, rec, recipe, fixed, data, origins)
    if imbalance is not None:
        if "imbalance" not in data:
            raise LtbenchError(f"--imbalance: benchmark {benchmark!r} has no imbalance ratio parameter.")
        data["imbalance"] = imbalance
        origins["data.imbalance"] = "--imbalance"
    own = {s.key: s for s in m.settings}
    data_sets = [o for o in overrides if o.stage == "data"]  # first: a method's defaults may follow the data
    _apply_sets(data_sets, {}, data, origins, method, benchmark, shown, bool(m.stage1), own)
    stages = _stage_values(m, rec, recipe, b, data, fixed, epochs, origins)
    base_backbone = rec.get("backbone") or b.default_backbone
    if not rec.get("backbone") and b.scratch_backbone and m.backbone_problems(m.backbone_for(base_backbone)):
        base_backbone = b.scratch_backbone  # a method that cannot take the benchmark's pretrained default (RIDE's experts)
    chosen_backbone = backbone or m.backbone_for(base_backbone)
    origins["backbone"] = "--backbone" if backbone else (f"method {method}" if chosen_backbone != base_backbone
                                                         else f"recipe {recipe}" if rec.get("backbone") else "benchmark")

    _apply_sets([o for o in overrides if o.stage != "data"], stages, data, origins, method, benchmark, shown,
                bool(m.stage1), own)
    _refuse_epochs_twice(m, epochs, stages, origins, shown)

    if "imbalance" in data:
        named = "--imbalance" if origins.get("data.imbalance") == "--imbalance" else "data.imbalance"
        data["imbalance"] = coerce(f"{benchmark}: {named}", data["imbalance"], b.params["imbalance"])
    b.check_params(data)
    backbones.get_entry(chosen_backbone)
    check_input(b, data, chosen_backbone, origins)  # the input settings, and data keys they make do nothing
    pretrained_defaults(b, chosen_backbone, m, stages, origins)  # imagefolder's linear probe, frozen stages
    for st, hp in stages.items():  # a group switched on (maxnorm=true): its settings join at their defaults
        for group in GROUPS:
            if group.joins(hp.get(group.switch)):
                _join_group(group, st, hp, origins)
    problems: list[str] = []
    for st, hp in stages.items():
        problems += stage_problems(shown(st), hp, own) + m.check(st, hp)
    if problems:
        raise LtbenchError("invalid hyperparameters: " + "; ".join(problems) + ". Change them with --set "
                           "STAGE.KEY=VALUE.")
    return RunSpec(benchmark=benchmark, data=data, method=method, backbone=chosen_backbone, recipe=recipe,
                   seed=int(seed), stages=stages, origins=origins)
