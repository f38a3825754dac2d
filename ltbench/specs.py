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

from . import PROTOCOL_VERSION
from .benchmark import Benchmark
from .errors import LtbenchError
from .method import Method
from .recipes import (
    ADDED_DEFAULTS,
    CHOICES,
    ENGINE_DEFAULTS,
    FROZEN_STAGE_DEFAULTS,
    MAXNORM_DEFAULTS,
    recipe_for,
)
from .registry import backbones, benchmarks, methods


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
    protocol: int = PROTOCOL_VERSION
    origins: dict[str, str] = field(default_factory=dict, compare=False)  # not hashed
    parent_origins: dict[str, str] = field(default_factory=dict, compare=False)  # the stage-1 run's origins

    def canonical(self) -> dict[str, Any]:
        """What the run id hashes: the spec without the keys added after protocol 1 that are at the
        value earlier runs had (recipes.ADDED_DEFAULTS)."""
        out = {
            "protocol": self.protocol, "benchmark": self.benchmark, "data": _hashed(self.data),
            "method": self.method, "backbone": self.backbone, "recipe": self.recipe, "seed": self.seed,
            "stages": {st: _hashed(hp) for st, hp in self.stages.items()}, "parent": self.parent,
        }
        if self.init is not None:
            out["init"] = self.init
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
        added = {k: v for k, v in ADDED_DEFAULTS.items() if k in ENGINE_DEFAULTS}
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
            protocol=d.get("protocol", PROTOCOL_VERSION), origins=d.get("origins", {}),
            parent_origins=d.get("parent_origins", {}),
        )


def _hashed(values: dict[str, Any]) -> dict[str, Any]:
    # a stage with MaxNorm's settings (its method's, as weight balancing's) hashes maxnorm at any value
    grouped = "threshold" in values
    return {k: v for k, v in values.items()
            if k not in ADDED_DEFAULTS or v != ADDED_DEFAULTS[k] or (grouped and k == "maxnorm")}


def setting(values: dict[str, Any], key: str) -> Any:
    """A stage's or the data's value of ``key``, also from a canonical spec, which leaves out the keys
    of ADDED_DEFAULTS at their default."""
    return values[key] if key in values else ADDED_DEFAULTS[key]


def flat_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec (as in spec.json) by the names a user writes: backbone, recipe, data.KEY, STAGE.KEY, and
    stage1.KEY for the stage-1 run a decoupled method builds on."""
    out: dict[str, Any] = {"backbone": spec["backbone"], "recipe": spec["recipe"]}
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
        return flat[key] if key in flat else ADDED_DEFAULTS.get(key.rsplit(".", 1)[-1])

    varying = [k for k in keys if len({json.dumps(value(f, k), sort_keys=True) for f in flats}) > 1]
    return [{k: value(f, k) for k in varying if k in f or k.rsplit(".", 1)[-1] in ADDED_DEFAULTS} for f in flats]


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
    """Give ``value`` the type of ``default`` or explain why it cannot have it."""
    def bad(kind: str) -> LtbenchError:
        return LtbenchError(f"{where}={value!r}: expected {kind} (the default is {default!r}).")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("an integer")
        if isinstance(value, float) and not value.is_integer():
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, list):
        value = value if isinstance(value, list) else [value]
        if default and all(isinstance(v, (int, float)) for v in default):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise bad("a list of numbers")
            return [float(v) for v in value]
        return value
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise bad("a string")
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def check_stage(where: str, hp: dict[str, Any]) -> list[str]:
    """Engine-level range checks of a stage's hyperparameters (``where``: the stage's name as a user
    writes it in --set)."""
    problems = []
    if hp["epochs"] < 1:
        problems.append(f"{where}.epochs={hp['epochs']}: must be at least 1")
    if hp["batch_size"] < 2:
        problems.append(f"{where}.batch_size={hp['batch_size']}: must be at least 2 (batch norm needs 2 images)")
    if not hp["lr"] > 0:
        problems.append(f"{where}.lr={hp['lr']}: must be positive")
    if not 0 <= hp["momentum"] < 1:
        problems.append(f"{where}.momentum={hp['momentum']}: must lie in [0, 1)")
    if hp["weight_decay"] < 0:
        problems.append(f"{where}.weight_decay={hp['weight_decay']}: must not be negative")
    if hp["warmup_epochs"] < 0:
        problems.append(f"{where}.warmup_epochs={hp['warmup_epochs']}: must not be negative")
    elif hp["warmup_epochs"] and hp["warmup_epochs"] >= hp["epochs"] >= 1:
        problems.append(f"{where}.warmup_epochs={hp['warmup_epochs']}: must be below {where}.epochs={hp['epochs']} "
                        "(a warm-up as long as the stage leaves no epoch at the scheduled lr)")
    if not 0 < hp["gamma"] <= 1:
        problems.append(f"{where}.gamma={hp['gamma']}: must lie in (0, 1]")
    if any(not 0 < m < 1 for m in hp["milestones"]) or hp["milestones"] != sorted(hp["milestones"]):
        problems.append(f"{where}.milestones={hp['milestones']}: must be increasing fractions of the epochs in (0, 1)")
    for key, allowed in CHOICES.items():
        if key in hp and hp[key] not in allowed:
            problems.append(f"{where}.{key}={hp[key]!r}: must be one of {', '.join(allowed)}")
    return problems + check_tricks(where, hp)


def check_tricks(where: str, hp: dict[str, Any]) -> list[str]:
    """Range checks of the training tricks' settings (ltbench.tricks)."""
    problems = []
    for key, closed in (("label_smoothing", False), ("reweight_beta", False), ("reweight_from", True),
                        ("resample_from", True)):
        if key in hp and not (0 <= hp[key] <= 1 if closed else 0 <= hp[key] < 1):
            problems.append(f"{where}.{key}={hp[key]}: must lie in {'[0, 1]' if closed else '[0, 1)'}")
    if hp.get("mix", "none") != "none" and not hp["mix_alpha"] > 0:
        problems.append(f"{where}.mix_alpha={hp['mix_alpha']}: must be positive (lam ~ Beta(alpha, alpha))")
    if hp.get("autoaugment", "none") != "none" and not hp["augment"]:
        problems.append(f"{where}.autoaugment={hp['autoaugment']}: needs {where}.augment=true (it augments the "
                        "training images after their crop and flip)")
    if "threshold" in hp and hp["threshold"] < 0:
        problems.append(f"{where}.threshold={hp['threshold']}: must not be negative")
    return problems


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


# Keys that only one setting of another key reads (key -> (that key, its value)): set under another
# value they would change nothing but the run id.
READ_ONLY_UNDER = {"milestones": ("schedule", "step"), "gamma": ("schedule", "step"),
                   "base_batch": ("lr_scaling", "linear"), "mix_alpha": ("mix", ("mixup", "cutmix")),
                   "reweight_beta": ("reweight", "cb"), "reweight_from": ("reweight", "cb"),
                   "resample_from": ("sampler", ("class_balanced", "class_aware")),
                   "threshold": ("maxnorm", True), "maxnorm_every": ("maxnorm", True)}

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
    overrides = parse_sets(sets or [])
    if stage1_run is not None and not m.stage1:
        raise LtbenchError(f"--stage1: {method} is a one-stage method; only decoupled methods "
                           f"({', '.join(n for n in methods.names() if methods.get(n).stage1)}) build on a stage-1 run.")
    bound = {} if data_root is None else {"data": (benchmarks.get(benchmark)().data_params(
        Path(data_root), split_root), "--data-root")}  # fixed values of the data's parameters
    if not m.stage1:
        return replace(_resolve_one(method, benchmark, backbone, recipe, imbalance, epochs, overrides, bound, seed),
                       init=init)

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
                                      stage1_fixed, seed, names={"train": "stage1"}), init=init)
        own_sets = [o for o in qualified if o.stage not in ("stage1", "data")]
    else:
        if any(st in ("stage1", "data") for st, *_ in overrides) or imbalance is not None or backbone is not None \
                or epochs is not None or init is not None:
            raise LtbenchError("with --stage1 RUN the stage-1 settings, the backbone and the data come from that "
                               "run; drop --imbalance/--backbone/--epochs/--init-weights/--set stage1.*/data.* "
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
    from .backbones import weights_id

    if not Path(init_weights).is_file():
        raise LtbenchError(f"--init-weights {init_weights}: no such file.")
    return weights_id(Path(init_weights))


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
                has_stage1: bool) -> None:
    """Put each --set into its stage (or data), typed like the default it replaces, and record its
    origin; refuse a key no stage has, one that several have, one set twice, and one that the stage's
    other settings make it ignore (READ_ONLY_UNDER)."""
    set_by: dict[str, Override] = {}  # stage.key -> the --set that set it
    for o in overrides:
        stage, key, value, where = o.stage, o.key, o.value, o.where
        if stage is None:
            holders = [s for s in stages if key in stages[s]] + (["data"] if key in data else [])
            if len(holders) != 1:
                known = sorted({f"{s}.{k}" for s in stages for k in stages[s]} | {f"data.{k}" for k in data})
                if not holders:
                    raise LtbenchError(f"{where}: no stage of {method} on {benchmark} has a key {key!r}. "
                                       f"Known keys: {', '.join(known)}.")
                raise LtbenchError(f"{where}: {key!r} exists in {', '.join(holders)}; "
                                   f"say which, e.g. --set {holders[0]}.{key}=...")
            stage = holders[0]
        target = data if stage == "data" else stages.get(stage)
        if target is None:
            raise LtbenchError(f"{where}: {method} has no stage {stage!r}; its stages are "
                               f"{', '.join(stages)}{' and stage1' if has_stage1 else ''} "
                               f"(and data.* for the benchmark's parameters).")
        if key in MAXNORM_DEFAULTS and "maxnorm" in target:  # MaxNorm's settings join a stage when set
            _add_maxnorm_settings(stage, target, origins)
        if key not in target:
            raise LtbenchError(f"{where}: {shown(stage)} has no key {key!r}; known: {', '.join(sorted(target))}.")
        earlier = set_by.get(f"{stage}.{key}")
        if earlier is not None and not (earlier.origin != "--set" and o.origin == "--set"):  # --set beats a config
            raise LtbenchError(f"{where}: {shown(stage)}.{key} is already set by {earlier.where}; keep one of them.")
        set_by[f"{stage}.{key}"] = o
        target[key] = coerce(f"{o.origin} {shown(stage)}.{key}", value, target[key])
        origins[f"{stage}.{key}"] = o.origin
    for name, o in set_by.items():
        item = o.where
        stage, _, key = name.partition(".")
        if key in READ_ONLY_UNDER and stage in stages:
            other, needed = READ_ONLY_UNDER[key]
            needed = needed if isinstance(needed, tuple) else (needed,)
            if stages[stage].get(other) not in needed:
                text = [json.dumps(v) if isinstance(v, bool) else str(v) for v in (stages[stage][other], *needed)]
                raise LtbenchError(f"{item}: {shown(stage)}.{other}={text[0]} ignores {key} "
                                   f"(only {other}={' or '.join(text[1:])} reads it); add --set "
                                   f"{shown(stage)}.{other}={text[1]}, or drop it.")


def _add_maxnorm_settings(stage: str, hp: dict[str, Any], origins: dict[str, str]) -> None:
    """MaxNorm's settings (recipes.MAXNORM_DEFAULTS) into a stage that lacks them, at their defaults."""
    for k, v in MAXNORM_DEFAULTS.items():
        if k not in hp:
            hp[k] = v
            origins[f"{stage}.{k}"] = "engine"


def _stage_values(m: Method, rec: dict[str, Any], recipe: str, family: str,
                  fixed: dict[str, tuple[dict[str, Any], str]], epochs: int | None,
                  origins: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every stage's values before --set, in the order that later ones override: the engine's defaults
    (training stages), the recipe, the method, ``fixed`` (e.g. WB's tuned stage-1 weight decay), then
    --epochs for the first training stage; each value's origin goes into ``origins``."""
    stages: dict[str, dict[str, Any]] = {}
    first_training_stage = next((st for st in m.stages if m.trains(st)), None)
    for st in m.stages:
        hp: dict[str, Any] = {}
        src: dict[str, str] = {}
        layers = [(ENGINE_DEFAULTS, "engine"), (FROZEN_STAGE_DEFAULTS if m.frozen_features(st) else {}, "engine"),
                  (rec.get("stage", {}), f"recipe {recipe}")] if m.trains(st) else []
        layers.append((m.hparams(st, recipe, family), f"method {m.name}"))
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

    if data is None:
        data = dict(b.params)
        for k in data:
            origins[f"data.{k}"] = "benchmark"
        for k, v in rec.get("data", {}).items():
            data[k] = v
            origins[f"data.{k}"] = f"recipe {recipe}"
        values, origin = fixed.get("data", ({}, ""))  # what identifies the data (resolve's data_root)
        data.update(values)
        origins.update({f"data.{k}": origin for k in values})
    else:
        data = dict(data)
        origins.update({f"data.{k}": "stage-1 run" for k in data})
    stages = _stage_values(m, rec, recipe, b.recipe_family, fixed, epochs, origins)

    if imbalance is not None:
        if "imbalance" not in data:
            raise LtbenchError(f"--imbalance: benchmark {benchmark!r} has no imbalance ratio parameter.")
        data["imbalance"] = imbalance
        origins["data.imbalance"] = "--imbalance"
    base_backbone = rec.get("backbone") or b.default_backbone
    chosen_backbone = backbone or m.backbone_for(base_backbone)
    origins["backbone"] = "--backbone" if backbone else (f"method {method}" if chosen_backbone != base_backbone
                                                         else f"recipe {recipe}" if rec.get("backbone") else "benchmark")

    _apply_sets(overrides, stages, data, origins, method, benchmark, shown, bool(m.stage1))
    for st, hp in stages.items():  # MaxNorm switched on: its settings join the stage at their defaults
        if hp.get("maxnorm") is True:
            _add_maxnorm_settings(st, hp, origins)

    for k in ("imbalance",):
        if k in data:
            data[k] = coerce(f"data.{k}", data[k], b.params[k])
    b.check_params(data)
    backbones.get_entry(chosen_backbone)
    problems: list[str] = []
    for st, hp in stages.items():
        problems += (check_stage(shown(st), hp) if m.trains(st) else []) + m.check(st, hp)
    if problems:
        raise LtbenchError("invalid hyperparameters: " + "; ".join(problems) + ". Change them with --set "
                           "STAGE.KEY=VALUE.")
    return RunSpec(benchmark=benchmark, data=data, method=method, backbone=chosen_backbone, recipe=recipe,
                   seed=int(seed), stages=stages, origins=origins)
