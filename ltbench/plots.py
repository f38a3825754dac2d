"""Figures from records (matplotlib, the ``plot`` extra): PNG files.

- norms: per-class classifier weight norms against class index sorted by training frequency, one
  line per run (the WB paper's key figure: CE vs weight decay vs weight balancing);
- accuracy: per-class test accuracy against the class's training count;
- wd: test accuracy against weight decay (stage 1 for decoupled methods), mean ± std over seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import LtbenchError

KINDS = ("norms", "accuracy", "wd")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LtbenchError("`ltbench plot` needs matplotlib: pip install 'ltbench[plot]'.") from None
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


def plot_wd(results: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        series[f"{r['method']}, {r['label']}"][weight_decay_of(r)].append(r["test"]["top1"])
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


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


PLOTTERS = {"norms": plot_norms, "accuracy": plot_accuracy, "wd": plot_wd}
