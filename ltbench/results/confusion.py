"""A record's class names and test confusion matrix: `ltbench plot confusion RUN_ID` and `ltbench report`.

The engine records the test set's misclassified images as sparse ``[true, predicted, count]`` triples
(result.json ``test.confusion``, ltbench.engine.evaluation.top5_and_confusion); with the test images of
each class (``test.per_class_count``) they give the whole matrix. Rows are normalised (the share of a
class's test images predicted as each class) and classes are ordered by training count, head to tail.
Up to MATRIX_MAX_CLASSES classes the figure is the matrix with the class names on its axes; beyond, it
is the HARDEST confusions: the largest off-diagonal rates.
"""

from __future__ import annotations

from typing import Any

from ..errors import LtbenchError

MATRIX_MAX_CLASSES = 100  # the matrix itself up to this many classes; beyond, the hardest confusions
HARDEST = 30  # confusions in the figure beyond MATRIX_MAX_CLASSES


def class_names_of(result: dict[str, Any]) -> tuple[list[str], bool]:
    """The record's class names and whether it recorded them (result.json ``class_names``, or an image
    folder's ``data_info.classes``); else the class indices ("0", "1", ...) and False."""
    n = len(result["class_counts"])
    info = result.get("data_info") if isinstance(result.get("data_info"), dict) else {}
    for names in (result.get("class_names"), info.get("class_names"), info.get("classes")):
        if isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names):
            return names, True
    return [str(c) for c in range(n)], False


def by_training_count(result: dict[str, Any]) -> list[int]:
    """The class indices ordered by training count, head to tail (ties by index)."""
    counts = result["class_counts"]
    return sorted(range(len(counts)), key=lambda c: (-counts[c], c))


def reported_test(result: dict[str, Any]) -> dict[str, Any]:
    """The test report whose numbers the run reports: the flip-averaged one under data.report=test_flip_avg
    (the WB authors' code), else the plain one."""
    flip = result.get("test_flip_avg")
    reported = result["spec"].get("data", {}).get("report") if isinstance(result.get("spec"), dict) else None
    return flip if isinstance(flip, dict) and reported == "test_flip_avg" else result["test"]


def recorded_confusion(result: dict[str, Any]) -> list[tuple[int, int, int]] | None:
    """The record's test confusion triples (of ``reported_test``); None for a record written before ltbench
    kept them. A malformed one is an LtbenchError that names the run."""
    test = reported_test(result)
    if "confusion" not in test or not isinstance(test.get("per_class_count"), list):
        return None
    n = len(result["class_counts"])
    triples = test["confusion"]
    ok = isinstance(triples, list) and len(test["per_class_count"]) == n and all(
        isinstance(t, list) and len(t) == 3 and all(type(v) is int for v in t) and 0 <= t[0] < n and 0 <= t[1] < n
        and t[0] != t[1] and t[2] > 0 for t in triples)
    if not ok:
        raise LtbenchError(f"run {result['run_id']}: result.json's test.confusion is not a list of [true, predicted, "
                           "count] triples of its classes (damaged?); rerun the run with `ltbench run ... --force` "
                           "to record it again.")
    return [(t[0], t[1], t[2]) for t in triples]


def not_recorded(result: dict[str, Any]) -> str:
    """Why a record has no confusion matrix, and how to get one."""
    return (f"run {result['run_id']} was recorded before ltbench kept the test confusion matrix (its result.json "
            "has no test.confusion); rerun it with `ltbench run ... --force` (its selectors: `ltbench show "
            f"{result['run_id'][:12]}`) to record it.")


def confusion_rates(result: dict[str, Any]) -> tuple[list[int], Any]:
    """(the classes head to tail, the row-normalised matrix in that order as a numpy array: row i, column j
    = the share of class order[i]'s test images predicted as order[j]; a row of a class without test
    images is 0). LtbenchError for a record without the confusion."""
    import numpy as np

    triples = recorded_confusion(result)
    if triples is None:
        raise LtbenchError(not_recorded(result))
    n = len(result["class_counts"])
    per_class = np.asarray(reported_test(result)["per_class_count"], dtype=float)
    counts = np.zeros((n, n))
    for t, p, k in triples:
        counts[t, p] += k
    counts[np.arange(n), np.arange(n)] = per_class - counts.sum(1)
    rates = counts / np.maximum(per_class, 1)[:, None]
    order = by_training_count(result)
    return order, rates[np.ix_(order, order)]


def hardest_confusions(result: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal rates, largest first (then most images): true and predicted class
    (index and name), images, the true class's test images and the rate (%)."""
    triples = recorded_confusion(result)
    if triples is None:
        raise LtbenchError(not_recorded(result))
    names, _ = class_names_of(result)
    n_test = reported_test(result)["per_class_count"]
    rows = [{"true": t, "predicted": p, "true_name": names[t], "predicted_name": names[p], "images": c,
             "of": n_test[t], "rate": 100.0 * c / n_test[t]} for t, p, c in triples if n_test[t] > 0]
    return sorted(rows, key=lambda r: (-r["rate"], -r["images"], r["true"], r["predicted"]))[:k]


def plain(text: str, width: int = 28) -> str:
    """A name as matplotlib should draw it: its "$" literal (no mathtext), cut to ``width`` characters."""
    text = text if len(text) <= width else text[:width - 1] + "…"
    return text.replace("$", r"\$")


def confusion_figure(plt: Any, results: list[dict[str, Any]]) -> Any:
    """The figure of `ltbench plot confusion RUN_ID` (plots.plot_confusion saves it): the row-normalised test
    confusion matrix of one run (classes head to tail, names on the axes) up to MATRIX_MAX_CLASSES classes;
    beyond, its HARDEST confusions. LtbenchError, before any figure is made, for several runs or a record
    without the confusion."""
    if len(results) != 1:
        raise LtbenchError(f"`ltbench plot confusion` draws one run; give one run id (got {len(results)}).")
    r = results[0]
    if recorded_confusion(r) is None:
        raise LtbenchError(not_recorded(r))
    return _matrix_figure(plt, r) if len(r["class_counts"]) <= MATRIX_MAX_CLASSES else _hardest_figure(plt, r)


def _title(r: dict[str, Any]) -> str:
    return plain(f"{r['method']} on {r['label']}, seed {r['seed']}, run {r['run_id'][:12]}", 90)


def _matrix_figure(plt: Any, r: dict[str, Any]) -> Any:
    order, rates = confusion_rates(r)
    names, _ = class_names_of(r)
    n = len(order)
    side = min(max(5.0, 2.5 + 0.14 * n), 17.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(100 * rates, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's test images")
    size = max(3.5, min(9.0, 360 / max(n, 1)))
    labels = [plain(names[c]) for c in order]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=size)
    ax.set_yticks(range(n), labels, fontsize=size)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if rates[i, j] > 0:
                    ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (by training count, head → tail)")
    ax.set_title(f"test confusion, row-normalised\n{_title(r)}", fontsize=9)
    return fig


def _hardest_figure(plt: Any, r: dict[str, Any]) -> Any:
    rows = hardest_confusions(r, HARDEST)
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.28 * max(len(rows), 1)))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [x["rate"] for x in rows], color="tab:blue")
    ax.set_yticks(ys, [f"{plain(x['true_name'], 32)} → {plain(x['predicted_name'], 32)}" for x in rows], fontsize=7)
    for y, x in zip(ys, rows, strict=True):
        ax.text(x["rate"], y, f" {x['images']}/{x['of']}", va="center", fontsize=6)
    ax.set_xlabel("% of the true class's test images predicted as the other class")
    ax.set_xlim(0, 105)
    n = len(r["class_counts"])
    ax.set_title(f"the {len(rows)} hardest test confusions of {n} classes (true → predicted)\n{_title(r)}", fontsize=9)
    if not rows:
        ax.text(50, 0, "no test image misclassified", ha="center")
    return fig
