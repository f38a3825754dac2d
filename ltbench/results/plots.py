"""Figures from records (matplotlib, a default dependency): PNG files.

- norms: per-class classifier weight norms against class index sorted by training frequency, one
  line per run (the WB paper's key figure: CE vs weight decay vs weight balancing);
- accuracy: per-class test accuracy against the class's training count;
- wd: test accuracy against weight decay (stage 1 for decoupled methods), mean ± std over seeds; one
  series per group of runs that differ in weight decay alone.
- confusion: one run's row-normalised test confusion matrix, or its hardest confusions
  (ltbench.results.confusion).
"""

from __future__ import annotations

import contextlib
import errno
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import LtbenchError
from ..spec.run_spec import differences, flat_settings, format_settings

KINDS = ("norms", "accuracy", "wd", "confusion", "tune")  # tune: ltbench.tune.plots (a study)


def _pyplot() -> Any:
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
            matplotlib.use("Agg")  # no window; a notebook (inline figures) or a session with pyplot keeps its own
        import matplotlib.pyplot as plt
    except ImportError:
        raise LtbenchError("`ltbench plot` needs matplotlib, which `pip install ltbench` brings; install it in this "
                           "environment: pip install matplotlib.") from None
    return plt


def run_labels(results: list[dict[str, Any]]) -> list[str]:
    """Method and (stage-1) weight decay, plus the seed or run id where those tell runs apart."""
    labels = []
    for r in results:
        stage1 = "stage-1 " if r["spec"].get("parent") else ""
        labels.append(f"{r['method']} ({stage1}WD {weight_decay_of(r):g})")
    if len(set(labels)) < len(labels):
        labels = [f"{lab} seed {r['seed']}" for lab, r in zip(labels, results, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} {r['run_id'][:8]}" for lab, r in zip(labels, results, strict=True)]
    return labels


def _by_frequency(r: dict[str, Any]) -> list[int]:
    counts = r["class_counts"]
    return sorted(range(len(counts)), key=lambda c: (-counts[c], c))


def plot_norms(results: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r, label in zip(results, run_labels(results), strict=True):
        order = _by_frequency(r)
        ax.plot(range(len(order)), [r["classifier_norms"][c] for c in order], marker="o", ms=3, label=label)
    ax.set_xlabel("class index, sorted by training count (frequent → rare)")
    ax.set_ylabel("L2 norm of the classifier row")
    ax.set_title(f"per-class classifier weight norms, {results[0]['label']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_accuracy(results: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r, label in zip(results, run_labels(results), strict=True):
        pts = [(n, a) for n, a in zip(r["class_counts"], r["test"]["per_class"], strict=True) if a is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.7, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(f"per-class accuracy against training count, {results[0]['label']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def weight_decay_of(r: dict[str, Any]) -> float:
    spec = r["spec"]
    if spec.get("parent"):
        return float(spec["parent"]["stages"]["train"]["weight_decay"])
    return float(next(iter(spec["stages"].values()))["weight_decay"])


WD_KEYS = ("stage1.weight_decay", "train.weight_decay")  # the weight decay that `plot wd` puts on its x axis


def wd_series(results: list[dict[str, Any]]) -> dict[str, dict[float, list[float]]]:
    """Test top-1 by weight decay, one series per group of runs that differ in that weight decay (and
    seed) alone; each series is named by its method, benchmark, and the settings that set it apart
    from the other series (e.g. train.epochs=10)."""
    def key(r: dict[str, Any]) -> str:
        flat = {k: v for k, v in flat_settings(r["spec"]).items() if k not in WD_KEYS}
        return json.dumps([r["method"], r["benchmark"], flat], sort_keys=True)

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    names: dict[str, list[str]] = defaultdict(list)  # series of one method on one benchmark
    for k, runs in groups.items():
        names[f"{runs[0]['method']}, {runs[0]['label']}"].append(k)
    series: dict[str, dict[float, list[float]]] = {}
    for base, keys in names.items():
        extra = differences([groups[k][0]["spec"] for k in keys], ignore=WD_KEYS)
        for k, diff in zip(keys, extra, strict=True):
            series[base + (f" ({format_settings(diff)})" if diff else "")] = _by_weight_decay(groups[k])
    return series


def _by_weight_decay(runs: list[dict[str, Any]]) -> dict[float, list[float]]:
    points: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        points[weight_decay_of(r)].append(r["test"]["top1"])
    return points


def plot_wd(results: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    series = wd_series(results)
    if not any(len(s) > 1 for s in series.values()):
        raise LtbenchError("`ltbench plot wd` needs runs of one method at two or more weight decays "
                           "(e.g. from `ltbench run --set train.weight_decay=...` or a sweep over it).")
    fig, ax = plt.subplots(figsize=(7, 4))
    positive = [wd for s in series.values() for wd in s if wd > 0]
    for name, points in sorted(series.items()):
        xs = sorted(points)
        means = [statistics.fmean(points[x]) for x in xs]
        stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xscale("symlog", linthresh=min(positive) / 2 if positive else 1e-4)
    ax.set_xlabel("weight decay (stage 1 for decoupled methods; symmetric log axis, 0 included)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("accuracy against weight decay (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _save(fig: Any, out: Path | None) -> Any:
    """Write the figure to ``out`` atomically (a temporary file beside it, then a rename) and return
    ``out``; a destination that cannot be written is one LtbenchError that names it. ``out`` None
    (ltbench.plot): nothing written, the figure returned. Either way the figure leaves pyplot's open
    figures (plt.close): no leak, and a notebook shows a returned figure once, as the cell's value (a
    closed figure still draws and saves)."""
    import matplotlib.pyplot as plt

    if out is None:
        fig.tight_layout()
        plt.close(fig)
        return fig
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(tmp, dpi=120)
        tmp.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LtbenchError(f"cannot write the plot to {out} ({_why_unwritable(out, exc)}); pass -o with a .png file "
                           "in a folder you can write to.") from None
    finally:
        plt.close(fig)
    return out


def _why_unwritable(out: Path, exc: OSError) -> str:
    for folder in out.parents:  # the nearest one that exists
        if folder.exists():
            return f"{folder} is a file, not a folder" if not folder.is_dir() else (exc.strerror or str(exc))
    return exc.strerror or str(exc)


def plot_confusion(results: list[dict[str, Any]], out: Path | None) -> Any:
    """One run's test confusion matrix, or its hardest confusions (ltbench.results.confusion); ``out`` as
    ``_save`` takes it."""
    from .confusion import confusion_figure

    return _save(confusion_figure(_pyplot(), results), out)


PLOTTERS = {"norms": plot_norms, "accuracy": plot_accuracy, "wd": plot_wd, "confusion": plot_confusion}
