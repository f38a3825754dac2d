"""What a backbone changes in a spec, as it is resolved: the data settings of its input (``schema.DATA``:
``data.resolution``, ``data.input_norm``; applied at run time by ltbench.data.resolution), a benchmark's
default tuning of a pretrained backbone (imagefolder: a linear probe), and the line that says so at run
start and in --dry-run. No torch here: the backbone's registry entry tells whether it is pretrained.
"""

from __future__ import annotations

from typing import Any

from ..errors import LtbenchError
from ..registry import backbones
from .schema import DATA, settings_of

PRETRAINED_LIBRARIES = ("open_clip", "timm")


def is_pretrained(backbone: str) -> bool:
    """Whether ``backbone`` is one of ltbench.models.pretrained's (open_clip or timm, weights or not)."""
    return getattr(backbones.get(backbone), "library", None) in PRETRAINED_LIBRARIES


def data_defaults() -> dict[str, Any]:
    """The values of every benchmark's data settings (``schema.DATA``) before --set."""
    return {s.key: s.default for s in DATA}


def pretrained_defaults(benchmark: Any, backbone: str, method: Any, stages: dict[str, dict[str, Any]],
                        origins: dict[str, str]) -> None:
    """A benchmark's tuning of a pretrained backbone (``Benchmark.pretrained_tuning``) in each stage that
    trains the backbone and whose tuning is still the engine's default (a recipe's, a method's or a --set
    value stays)."""
    tuning = getattr(benchmark, "pretrained_tuning", None)
    if tuning is None or not is_pretrained(backbone):
        return
    for st, hp in stages.items():
        if method.trains(st) and not method.frozen_features(st) and origins.get(f"{st}.tuning") == "engine":
            hp["tuning"] = tuning
            origins[f"{st}.tuning"] = f"benchmark {benchmark.name} (pretrained backbone)"


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
    """The line that says a benchmark chose a pretrained backbone and its tuning (imagefolder's default):
    printed as a run starts and by --dry-run; None for any other run."""
    from ..registry import benchmarks

    b = benchmarks.get(spec.benchmark)
    if spec.origins.get("backbone") != "benchmark" or b.pretrained_tuning is None or not is_pretrained(spec.backbone):
        return None
    tunings = sorted({str(settings_of(hp).tuning) for hp in spec.stages.values() if "epochs" in hp})
    how = "a linear probe on its features, extracted once" if tunings == ["linear"] else \
        f"tuning={','.join(tunings)}" if tunings else "no training"
    scratch = f"; --backbone {b.scratch_backbone} trains from scratch" if b.scratch_backbone else ""
    return f"{spec.benchmark}: pretrained {spec.backbone} by default, {how}{scratch}"
