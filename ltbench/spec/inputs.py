"""What a backbone changes in a spec, as it is resolved: the data settings of its input (``schema.DATA``:
``data.resolution``, ``data.input_norm``; applied at run time by ltbench.data.resolution), a benchmark's
default tuning of a pretrained backbone (imagefolder: a linear probe), the stages whose frozen backbone's
features are extracted once (``frozen_backbone``, ``caches_features``: the engine reads them too), and the
line that says what imagefolder chose, at run start and in --dry-run. No torch here: the backbone's registry
entry tells whether it is pretrained.
"""

from __future__ import annotations

from typing import Any

from ..errors import LtbenchError
from ..method import Method
from ..registry import backbones
from .schema import DATA, settings_of

PRETRAINED_LIBRARIES = ("open_clip", "timm")


def is_pretrained(backbone: str) -> bool:
    """Whether ``backbone`` is one of ltbench.models.pretrained's (open_clip or timm, weights or not)."""
    return getattr(backbones.get(backbone), "library", None) in PRETRAINED_LIBRARIES


def data_defaults() -> dict[str, Any]:
    """The values of every benchmark's data settings (``schema.DATA``) before --set."""
    return {s.key: s.default for s in DATA}


def frozen_backbone(method: Any, stage: str, hp: dict[str, Any], backbone: str) -> bool:
    """Whether ``stage`` leaves its backbone as it is: a classifier-only stage (``Method.frozen_features``), or
    ``tuning=linear`` on a pretrained backbone for a method that trains its classifier on the features alone
    (one with no ``forward`` of its own: BCL's hooks, for one, read the backbone's output of each batch)."""
    if method.frozen_features(stage):
        return True
    return (is_pretrained(backbone) and settings_of(hp).tuning == "linear"
            and type(method).forward is Method.forward)


def caches_features(method: Any, stage: str, hp: dict[str, Any], backbone: str) -> bool:
    """Whether ``stage`` trains (or transforms) its classifier on the frozen backbone's features of the
    unaugmented images, extracted once (ltbench.engine.training): a frozen backbone (``frozen_backbone``),
    with cache_features on, no augmentation and BatchNorm in eval mode; a stage that trains nothing, always."""
    if not frozen_backbone(method, stage, hp, backbone):
        return False
    values = settings_of(hp)
    return not method.trains(stage) or (values.cache_features and not values.augment and values.frozen_bn == "eval")


DEFAULT_ORIGINS = ("engine", "recipe ", "method ")  # values a user did not choose (no --set, config or --search)


def pretrained_defaults(benchmark: Any, backbone: str, method: Any, stages: dict[str, dict[str, Any]],
                        origins: dict[str, str]) -> None:
    """What a pretrained backbone changes in the stages before they are checked, each value only where it is
    still a default (the engine's, a recipe's or a method's; a --set or config value stays), with its origin:
    a benchmark's tuning of a pretrained backbone (``Benchmark.pretrained_tuning``, imagefolder's linear probe)
    in each stage that trains the backbone; then, in each stage whose backbone stays frozen
    (``frozen_backbone``) with cache_features on, no augmentation and BatchNorm in eval mode, so that it
    trains on the features extracted once (frozen backbones always use the features cache)."""
    if not is_pretrained(backbone):
        return
    tuning = getattr(benchmark, "pretrained_tuning", None)

    def default(st: str, key: str) -> bool:
        return origins.get(f"{st}.{key}", "engine").startswith(DEFAULT_ORIGINS)

    for st, hp in stages.items():
        if not method.trains(st):
            continue
        if tuning is not None and not method.frozen_features(st) and origins.get(f"{st}.tuning") == "engine":
            hp["tuning"] = tuning
            origins[f"{st}.tuning"] = f"benchmark {benchmark.name} (pretrained backbone)"
            mixed = [k for k in ("mix", "autoaugment") if hp.get(k, "none") != "none"]
            if tuning == "linear" and mixed and hp.get("cache_features", True) and default(st, "cache_features"):
                hp["cache_features"] = False  # mixed or auto-augmented images: through the frozen backbone each epoch
                origins[f"{st}.cache_features"] = f"benchmark {benchmark.name} (a linear probe with {mixed[0]})"
        if not frozen_backbone(method, st, hp, backbone) or not hp.get("cache_features", True):
            continue
        for key, value in (("augment", False), ("frozen_bn", "eval")):
            if key in hp and hp[key] != value and default(st, key):
                hp[key] = value
                origins[f"{st}.{key}"] = f"backbone {backbone} frozen (features extracted once)"


def check_input(benchmark: Any, data: dict[str, Any], backbone: str, origins: dict[str, str]) -> None:
    """Refuse data settings that do nothing, or cannot be, with ``backbone``: each data setting's range,
    the backbone's normalisation on a from-scratch backbone, and a parameter of the benchmark's own
    pipeline (``transform_keys``) or normalisation (``normalization_keys``) changed where LIFT's
    transforms or the backbone's mean/std replace it."""
    problems = [f"data.{p}" for s in DATA if (p := s.problem(data.get(s.key, s.default)))]
    values = settings_of(data)
    pretrained = is_pretrained(backbone)
    if values.input_norm == "backbone" and not pretrained:
        problems.append(f"data.input_norm=backbone: {backbone} is not a pretrained backbone and has no mean/std of "
                        "its own; use auto or benchmark")
    resized = values.resolution > 0 or pretrained
    own_norm = values.input_norm == "backbone" or (values.input_norm == "auto" and pretrained)
    where = f"{backbone}'s resolution" if values.resolution == 0 else f"data.resolution={values.resolution}"
    for keys, applies, what, fix in (
            (benchmark.transform_keys, resized, f"at {where} the images go through LIFT's transforms",
             "data.resolution=N for another size"),
            (benchmark.normalization_keys, own_norm, f"{backbone}'s images are normalised with its own mean/std "
             "(data.input_norm)", "data.input_norm=benchmark to use it")):
        for key in keys:
            if applies and key in data and data[key] != benchmark.params.get(key):
                origin = origins.get(f"data.{key}", "")
                problems.append(f"data.{key}={data[key]!r}{f' ({origin})' if origin else ''} does nothing: {what}; "
                                f"drop it, or set {fix}")
    if problems:
        raise LtbenchError(f"{benchmark.name} on {backbone}: " + "; ".join(problems) + ".")


def default_note(spec: Any) -> str | None:
    """The line that says a benchmark chose a pretrained backbone and its tuning (imagefolder's default), and
    the flag that trains from scratch instead: printed as a run starts and by --dry-run; None for any other run."""
    from ..registry import benchmarks, methods

    b = benchmarks.get(spec.benchmark)
    if spec.origins.get("backbone") != "benchmark" or b.pretrained_tuning is None or not is_pretrained(spec.backbone):
        return None
    m = methods.get(spec.method)()
    trained = [(st, hp) for st, hp in spec.stages.items() if m.trains(st)]
    tunings = sorted({str(settings_of(hp).tuning) for _, hp in trained})
    cached = all(caches_features(m, st, hp, spec.backbone) for st, hp in trained)
    how = ("a linear probe on its features, extracted once" if cached else "a linear probe") \
        if tunings == ["linear"] else f"tuning={','.join(tunings)}" if tunings else "no training"
    scratch = f"; --backbone {b.scratch_backbone} trains from scratch" if b.scratch_backbone else ""
    return f"{spec.benchmark}: {spec.backbone} pretrained (its default backbone), {how}{scratch}"
