"""The settings schema: every setting a run can have, declared once with its type, default, allowed
values or range, help text, and the version it appeared in.

Everything about a setting comes from here: the defaults a stage starts from, the parsing and checking of
``--set`` and config-file values (with did-you-mean), the hashing of keys added after protocol 1 (run ids
stay what they were), the origins `--dry-run` and `ltbench show` print, `ltbench list settings` and the
README's settings tables. A method declares its own keys the same way (``Method.settings``); a key it
does not declare is typed by its default.

Groups: the engine's settings of every training stage (optimisation, schedule, sampling, selection,
mixing, re-weighting, precision), and option groups that join a stage only when switched on
(``GROUPS``: MaxNorm's threshold and timing join when ``maxnorm`` is true or the method gives them).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LtbenchError


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

KINDS = ("bool", "int", "float", "str", "floats", "any")


def kind_of(value: Any) -> str:
    """The kind of a setting whose default is ``value`` (a method key declared by its default only)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return "floats"
    return "any"


@dataclass(frozen=True)
class Setting:
    """One setting: ``key`` as written after ``STAGE.`` in --set, its ``default``, what it does
    (``help``), its ``kind`` (bool, int, float, str, floats: a list of numbers; from the default when
    not given), ``choices`` (str) or a range [``low``, ``high``] (either end open with ``low_open`` /
    ``high_open``), ``since``: the value runs had before the key existed (a spec hashes the key only
    when it differs, so earlier run ids stay valid), and ``read_under``: (other key, values) when only
    those values of another key make this one do anything."""

    key: str
    default: Any
    help: str
    group: str = "method"
    kind: str = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    since: Any = UNSET
    read_under: tuple[str, tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(self.default))
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.key!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def range_text(self) -> str:
        """What values are allowed, as help and error messages say it."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None:
            return {"bool": "true or false", "str": "a string", "floats": "a list of numbers"}.get(self.kind, "")
        lo = "-inf" if self.low is None else _num(self.low)
        hi = "inf" if self.high is None else _num(self.high)
        return f"in {'(' if self.low_open or self.low is None else '['}{lo}, {hi}{')' if self.high_open or self.high is None else ']'}"

    def parse(self, where: str, value: Any) -> Any:
        """``value`` with this setting's type, checked against its choices and range; an LtbenchError
        naming ``where`` (e.g. "--set 'train.lr=x'") otherwise."""
        typed = self.typed(where, value)
        problem = self.problem(typed)
        if problem:
            raise LtbenchError(f"{where}: {problem}.")
        return typed

    def typed(self, where: str, value: Any, current: Any = UNSET) -> Any:
        """``value`` with this setting's type (no range check); the error names ``current``, the value it
        would replace, as "the default" (the setting's own default when not given)."""
        def bad(kind: str) -> LtbenchError:
            shown = self.default if current is UNSET else current
            return LtbenchError(f"{where}={value!r}: expected {kind} (the default is {shown!r}).")

        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if self.kind == "int":
            if not number or isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise bad("an integer")
            return int(value)
        if self.kind == "float":
            if not number:
                raise bad("a number")
            if not math.isfinite(value):
                raise bad("a finite number")
            return float(value)
        if self.kind == "floats":
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise bad("a list of finite numbers")
            return [float(v) for v in values]
        if self.kind == "str":
            if isinstance(value, (dict, list)) or value is None:
                raise bad("a string")
            return str(value).lower() if isinstance(value, bool) else str(value)
        return value

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already typed) is not allowed, as "key=value: must ...", or None."""
        shown = f"{self.key}={value!r}" if isinstance(value, str) else f"{self.key}={value}"
        if self.choices and value not in self.choices:
            return f"{shown}: must be {self.range_text}"
        values = value if self.kind == "floats" else [value] if self.kind in ("int", "float") else []
        for v in values:
            below = self.low is not None and (v < self.low or self.low_open and v == self.low)
            above = self.high is not None and (v > self.high or self.high_open and v == self.high)
            if (below or above) and self.low is not None and self.high is not None and self.high <= 1:
                return f"{shown}: must lie {self.range_text}"
            if below:
                return f"{shown}: " + ("must be positive" if self.low == 0 and self.low_open else
                                       "must not be negative" if self.low == 0 else f"must be at least {_num(self.low)}")
            if above:
                return f"{shown}: must be at most {_num(self.high)}" if not self.high_open else \
                    f"{shown}: must be below {_num(self.high)}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (bool, list, dict)) or v is None else f"{v:g}" if isinstance(v, float) \
        else repr(v) if isinstance(v, str) else str(v)


MAX_EPOCHS = 100_000
# Parameter-efficient tuning modes (ltbench.models.peft), as LIFT's configs name them (Shi et al. 2024).
TUNINGS = ("full", "linear", "bias", "layernorm", "vpt_shallow", "vpt_deep", "adapter", "adaptformer", "lora", "ssf")
MAX_BATCH = 2**20

# The engine's settings of every training stage, in the order help and the README list them.
ENGINE: tuple[Setting, ...] = (
    Setting("epochs", 200, "training epochs of the stage", "optimisation", low=1, high=MAX_EPOCHS),
    Setting("batch_size", 128, "images per optimizer step (over all processes)", "optimisation",
            low=2, high=MAX_BATCH),
    Setting("lr", 0.1, "peak learning rate (SGD)", "optimisation", low=0, low_open=True),
    Setting("momentum", 0.9, "SGD momentum", "optimisation", low=0, high=1, high_open=True),
    Setting("nesterov", False, "Nesterov momentum", "optimisation"),
    Setting("weight_decay", 5e-4, "L2 weight decay of the trained parameters", "optimisation", low=0),
    Setting("schedule", "cosine", "lr schedule after the warm-up", "schedule", choices=("cosine", "step", "constant")),
    Setting("warmup_epochs", 0, "linear warm-up epochs (below epochs)", "schedule", low=0, high=MAX_EPOCHS),
    Setting("milestones", [0.8, 0.9], "step schedule: increasing fractions of the epochs in (0, 1)", "schedule",
            low=0, high=1, low_open=True, high_open=True, read_under=("schedule", ("step",))),
    Setting("gamma", 0.1, "step schedule: lr factor at each milestone", "schedule", low=0, high=1, low_open=True,
            read_under=("schedule", ("step",))),
    Setting("lr_update", "step", "the schedule changes the lr every step, or once per epoch at its start: to the "
            "value at the epoch's end (epoch: the WB code) or at its start (epoch_start: torch's CosineAnnealingLR "
            "stepped per epoch, LIFT's)", "schedule", choices=("step", "epoch", "epoch_start"), since="step"),
    Setting("lr_scaling", "none", "linear: lr x batch_size / base_batch (Goyal et al.), recorded as effective_lr",
            "schedule", choices=("none", "linear"), since="none"),
    Setting("base_batch", 256, "the batch size that lr is stated for", "schedule", low=1, high=MAX_BATCH, since=256,
            read_under=("lr_scaling", ("linear",))),
    Setting("sampler", "instance", "instance | class_balanced (i.i.d.) | class_aware (Kang et al.'s class cycles)",
            "sampling", choices=("instance", "class_balanced", "class_aware")),
    Setting("resample_from", 0.0, "fraction of the epochs sampled instance-balanced before `sampler` applies (DRS)",
            "sampling", low=0, high=1, since=0.0, read_under=("sampler", ("class_balanced", "class_aware"))),
    Setting("augment", True, "random crop and flip of the training images", "sampling"),
    Setting("autoaugment", "none", "torchvision's policy per uint8 training image (needs augment=true)", "mixing",
            choices=("none", "autoaugment", "randaugment"), since="none"),
    Setting("mix", "none", "the batch mixed with itself rolled by one, lam ~ Beta(mix_alpha, mix_alpha)", "mixing",
            choices=("none", "mixup", "cutmix"), since="none"),
    Setting("mix_alpha", 1.0, "Beta(alpha, alpha) of the mixing weight", "mixing", low=0, low_open=True,
            since=1.0, read_under=("mix", ("mixup", "cutmix"))),
    Setting("label_smoothing", 0.0, "eps: (1 - eps) loss(out, y) + eps mean_k loss(out, k)", "mixing", low=0, high=1,
            high_open=True, since=0.0),
    Setting("reweight", "none", "class-balanced weighting of the method's loss per class, from reweight_from",
            "re-weighting", choices=("none", "cb"), since="none"),
    Setting("reweight_beta", 0.9999, "Cui et al.'s beta of the class-balanced weights", "re-weighting", low=0,
            high=1, high_open=True, since=0.9999, read_under=("reweight", ("cb",))),
    Setting("reweight_from", 0.0, "fraction of the epochs before re-weighting starts (0.8: Cao et al.'s DRW)",
            "re-weighting", low=0, high=1, since=0.0, read_under=("reweight", ("cb",))),
    Setting("maxnorm", False, "project the classifier's rows onto a ball after each step or epoch (MaxNorm; its "
            "settings join the stage when on)", "maxnorm", since=False),
    Setting("select", "val", "the reported epoch: best on val | best on test (labelled) | last", "selection",
            choices=("val", "test", "last")),
    Setting("cache_features", True, "classifier-only stages without augmentation, and tuning=linear stages, train "
            "on features extracted once", "speed"),
    Setting("precision", "bf16", "autocast on CUDA (the CPU is always fp32): bf16 | fp32 (the WB code)", "speed",
            choices=("bf16", "fp32"), since="bf16"),
    Setting("tuning", "full", "what trains besides the classifier: full (every parameter, as before) | linear | bias | "
            "layernorm | vpt_shallow | vpt_deep | adapter | adaptformer | lora | ssf (ltbench.models.peft; the modes "
            "after layernorm need a ViT)", "tuning", choices=TUNINGS, since="full"),
)


@dataclass(frozen=True)
class Group:
    """Settings that join a stage only when ``switch`` is true (or when the stage's method gives them).
    A stage that holds them hashes ``switch`` at any value (a method's own maxnorm=false is a choice)."""

    name: str
    switch: str
    settings: tuple[Setting, ...]
    when: tuple[Any, ...] = (True,)  # the values of ``switch`` that bring the group in

    def joins(self, value: Any) -> bool:
        return value in self.when


_VPT, _BOTTLENECK = ("vpt_shallow", "vpt_deep"), ("adapter", "adaptformer", "lora")
GROUPS: tuple[Group, ...] = (
    Group("maxnorm", "maxnorm", (
        Setting("threshold", 0.1, "radius = min ‖w_k‖ + threshold (max ‖w_k‖ - min ‖w_k‖), norms as the stage starts",
                "maxnorm", low=0, read_under=("maxnorm", (True,))),
        Setting("maxnorm_every", "step", "project after every optimizer step (the WB paper) | every epoch (the WB "
                "code)", "maxnorm", choices=("step", "epoch"), read_under=("maxnorm", (True,))),
    )),
    Group("vpt", "tuning", (
        Setting("vpt_len", 10, "prompt tokens (VPT shallow: after the patch embedding; deep: fresh ones at every block)",
                "tuning", low=1, high=4096, read_under=("tuning", _VPT)),
    ), when=_VPT),
    Group("bottleneck", "tuning", (
        Setting("adapter_dim", 0, "bottleneck width of Adapter/AdaptFormer, rank of LoRA; 0: LIFT's rule 2^floor(log2("
                "classes / (2 blocks))), at least 1", "tuning", low=0, high=65536, read_under=("tuning", _BOTTLENECK)),
    ), when=_BOTTLENECK),
    Group("lora", "tuning", (
        Setting("lora_alpha", 1.0, "LoRA's update is (lora_alpha / adapter_dim) B A x (1: LIFT's 1 / rank)", "tuning",
                low=0, low_open=True, read_under=("tuning", ("lora",))),
    ), when=("lora",)),
)

# The engine's settings of a classifier-only stage on a frozen backbone (Method.frozen_features).
FROZEN: tuple[Setting, ...] = (
    Setting("frozen_bn", "eval", "BatchNorm of the frozen backbone: eval | train (batch statistics, running ones "
            "updated: Kang et al.'s and the WB code's stage 2)", "frozen backbone", choices=("eval", "train"),
            since="eval"),
)

# Keys outside the engine's stage settings that were added after protocol 1, with the value earlier runs
# had: benchmark parameters (data.normalization, data.report) and tau_norm's keep_bias. Declared with
# their owners (datasets/cifar_lt.py, methods/tau_norm.py); listed here as well because a run id is
# computed without loading plugins.
ADDED_ELSEWHERE: dict[str, Any] = {"normalization": "own", "report": "test", "keep_bias": False}

BY_KEY: dict[str, Setting] = {s.key: s for s in (*ENGINE, *FROZEN, *(s for g in GROUPS for s in g.settings))}

# Settings of every benchmark's data (``data.KEY``, beside the benchmark's own parameters): the images at a
# backbone's resolution (ltbench.data.resolution). At their defaults a from-scratch backbone's data is what it was.
DATA: tuple[Setting, ...] = (
    Setting("resolution", 0, "side of the images after LIFT's transforms (train RandomResizedCrop + flip, test "
            "Resize(side*8/7) + CenterCrop); 0: a pretrained backbone's input size, the benchmark's own pipeline for a "
            "from-scratch backbone (a ViT of another fixed size resizes again inside the model, as the record says)",
            "data", low=0, high=4096, since=0),
    Setting("input_norm", "auto", "mean/std of the inputs: auto (a pretrained backbone's own, else the benchmark's) | "
            "backbone | benchmark", "data", choices=("auto", "backbone", "benchmark"), since="auto"),
)
DATA_BY_KEY: dict[str, Setting] = {s.key: s for s in DATA}

# Every key added after protocol 1 -> the value runs had before it: hashed only when it differs.
SINCE: dict[str, Any] = {**{k: s.since for k, s in BY_KEY.items() if s.since is not UNSET}, **ADDED_ELSEWHERE,
                         **{s.key: s.since for s in DATA}}


def engine_defaults(frozen: bool = False) -> dict[str, Any]:
    """The engine's default values of a training stage (``frozen``: a classifier-only stage)."""
    return {s.key: _copy(s.default) for s in (*ENGINE, *(FROZEN if frozen else ()))}


def group_defaults(group: Group) -> dict[str, Any]:
    return {s.key: _copy(s.default) for s in group.settings}


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v


def hashed(values: Mapping[str, Any]) -> dict[str, Any]:
    """What a run id hashes of a stage's (or the data's) values: the keys added after protocol 1 are
    left out at the value earlier runs had, except a group's switch in a stage that holds the group."""
    grouped = {g.switch for g in GROUPS if all(s.key in values for s in g.settings)}
    return {k: v for k, v in values.items() if k not in SINCE or v != SINCE[k] or k in grouped}


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """" (did you mean 'lr'?)" when a known key is close to ``key``, else ""."""
    close = difflib.get_close_matches(key, list(known), n=2, cutoff=0.7)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class Settings(dict):
    """A stage's (or the data's) resolved values: a dict (spec.json, run ids) whose keys also read as
    attributes, ``hp.lr``. A key added after protocol 1 that a canonical spec leaves out at its
    earlier value reads as that value (``hp.lr_update`` of an old stage-1 run is "step")."""

    def __getattr__(self, key: str) -> Any:
        if key in self:
            return self[key]
        if key in SINCE:
            return SINCE[key]
        raise AttributeError(f"no setting {key!r}; known: {', '.join(sorted(self))}")


def settings_of(values: Mapping[str, Any]) -> Settings:
    return values if isinstance(values, Settings) else Settings(values)


def stage_problems(where: str, hp: Mapping[str, Any], own: Mapping[str, Setting] | None = None) -> list[str]:
    """Every problem of a training stage's values (``where``: the stage as a user writes it): each
    setting's own range or choices, then the rules that tie settings together."""
    problems = []
    for key, value in hp.items():
        s = BY_KEY.get(key) or (own or {}).get(key)
        p = s.problem(value) if s is not None else None
        if p:
            problems.append(f"{where}.{p}")
    return problems + _cross_problems(where, hp)


def _cross_problems(where: str, hp: Mapping[str, Any]) -> list[str]:
    problems = []
    warmup, epochs = hp.get("warmup_epochs", 0), hp.get("epochs", 1)
    if warmup and warmup >= epochs >= 1:
        problems.append(f"{where}.warmup_epochs={warmup}: must be below {where}.epochs={epochs} (a warm-up as "
                        "long as the stage leaves no epoch at the scheduled lr)")
    milestones = hp.get("milestones", [])
    if milestones != sorted(milestones):
        problems.append(f"{where}.milestones={_show(milestones)}: must be increasing fractions of the epochs in (0, 1)")
    tuning = hp.get("tuning", "full")
    if "frozen_bn" in hp and tuning not in ("full", "linear"):  # a classifier-only stage on a frozen backbone
        problems.append(f"{where}.tuning={tuning}: {where} trains the classifier of a frozen backbone; tune the "
                        "backbone in the stage that trains it (e.g. stage1.tuning)")
    if hp.get("autoaugment", "none") != "none" and not hp.get("augment", True):
        problems.append(f"{where}.autoaugment={hp['autoaugment']}: needs {where}.augment=true (it augments the "
                        "training images after their crop and flip)")
    images = [k for k in ("mix", "autoaugment") if hp.get(k, "none") != "none"]
    if tuning == "linear" and hp.get("cache_features", True) and images:
        problems.append(f"{where}.{images[0]}={hp[images[0]]}: {where}.tuning=linear trains on the frozen backbone's "
                        f"features of the unaugmented images, extracted once; set {where}.cache_features=false (the "
                        f"frozen backbone every epoch) or another {where}.tuning, or drop {images[0]}")
    return problems


def settings_table(settings: Iterable[Setting]) -> list[list[str]]:
    """Rows of key, default, allowed values, group and help (`ltbench list settings`, the README)."""
    return [[s.key, _show(s.default), s.range_text, s.group, s.help + (f" (only under {s.read_under[0]}="
            f"{' or '.join(_show(v) for v in s.read_under[1])})" if s.read_under else "")] for s in settings]


def all_engine_settings() -> tuple[Setting, ...]:
    return (*ENGINE, *(s for g in GROUPS for s in g.settings), *FROZEN)
