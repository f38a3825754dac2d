"""`ltbench report`: one self-contained HTML page of a results store's finished runs.

The page holds the comparison tables (``tables.build_table``: all benchmarks, then each benchmark with
many / medium / few) and, for every run selected, its result, per-class test accuracy against training
count with class names (figure and table), its classifier's weight norms, its test confusion matrix
(``confusion``: the matrix up to 100 classes, the hardest confusions beyond), its learning curves
(metrics.jsonl), and its settings with their origins (``ltbench show``'s text) and provenance (versions,
git commit, device, host, checksums). A record of an older ltbench lacks some of these; its section says
which ("not recorded for this run").

Self-contained: figures are inline PNG (``data:`` URIs), the style sheet and the one script are inline,
and the page's Content-Security-Policy forbids loading anything (``default-src 'none'``; images from
``data:`` only; no script but its own, by hash), so opening it makes no network request. Every string
that comes from a record (names, settings, notes, paths) is escaped. The script only marks, once the
page has loaded, how many figures decoded (``<html data-figures-shown="k/n">``): the browser test reads it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DamagedRecord, LtbenchError
from ..results.confusion import (
    HARDEST,
    MATRIX_MAX_CLASSES,
    by_training_count,
    class_names_of,
    hardest_confusions,
    not_recorded,
    recorded_confusion,
    reported_test,
)

MAX_CLASS_ROWS = 1000  # per-class table rows of one run (head to tail); result.json holds them all
NOT_RECORDED = "not recorded for this run (a record of an older ltbench)"
SCRIPT = ("addEventListener('load',function(){var s=document.images,k=0;for(var i=0;i<s.length;i++)"
          "if(s[i].complete&&s[i].naturalWidth>0)k++;"
          "document.documentElement.setAttribute('data-figures-shown',k+'/'+s.length)});")
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1100px;
     padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
thead th{background:#f3f3f3}
table.kv td{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.missing{color:#8a5300;background:#fff6e0;padding:.3em .6em}
.notes{font-size:.85em;color:#444}
details{margin:.4em 0}
"""


def esc(value: Any) -> str:
    """A value from a record as HTML text (also inside attribute values)."""
    return html.escape(str(value), quote=True)


def write_report(results: Path, output: Path, benchmark: str | None = None, method: str | None = None,
                 where: list[str] | None = None) -> tuple[int, int]:
    """Write the report of ``results``' finished runs (filtered as `ltbench table` filters) to ``output``,
    atomically; (runs, figures) in it."""
    from ..files import atomic_write_bytes

    output = Path(output)
    inside = next((part for part in ("runs", "evals") if _within(output, Path(results) / part)), None)
    if inside is not None or output.is_dir():
        why = "it is a folder" if output.is_dir() else f"it is inside the store's {inside}/ records"
        raise LtbenchError(f"-o {output}: {why}; name an .html file elsewhere (e.g. -o report.html).")
    page, runs, figures = build_report(Path(results), benchmark, method, where)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output, page.encode())
    except OSError as exc:
        raise LtbenchError(f"cannot write the report to {output} ({exc.strerror or exc}); pass -o with an .html "
                           "file in a folder you can write to.") from None
    return runs, figures


def _within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def build_report(results: Path, benchmark: str | None = None, method: str | None = None,
                 where: list[str] | None = None) -> tuple[str, int, int]:
    """(the page, the runs in it, its figures). One LtbenchError when no finished run matches."""
    from ..results import where as where_
    from ..results.store import Store
    from ..results.tables import read_records
    from ..spec.request import known_names

    store = Store(results)
    benchmark_names, method_names = known_names(benchmark, method)
    records = read_records(store, benchmark_names)
    matching = where_.select(records.results, where_.parse_where(where))
    runs = sorted((r for r in matching if not method_names or r["method"] in method_names),
                  key=lambda r: (r["label"], r["method"], r["seed"], r["run_id"]))
    asked = " and ".join(f"{o} {v}" for o, v in (("--dataset", benchmark), ("--method", method),
                                                  *(("--where", w) for w in where or [])) if v)
    if not runs:
        notes = "".join(f" ({n})" for n in records.notes())
        raise LtbenchError(f"no finished runs in {results}{f' match {asked}' if asked else ''}{notes}; run some with "
                           "`ltbench run` first (`ltbench status` lists the runs).")
    dirs = {rd.run_id: rd for rd in store.runs()}
    with tempfile.TemporaryDirectory(prefix="ltbench-report-") as tmp:
        figures = Figures(Path(tmp))
        body = [_heading(results, runs, asked), _contents(runs), _tables(matching, runs, method_names, records)]
        body += [_run_section(i, r, store, dirs.get(r["run_id"]), figures) for i, r in enumerate(runs, 1)]
    return _page("\n".join(body)), len(runs), figures.count


def _page(body: str) -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "base-uri 'none'; form-action 'none'")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>ltbench report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


def _heading(results: Path, runs: list[dict[str, Any]], asked: str) -> str:
    from .. import __version__

    labels = sorted({r["label"] for r in runs})
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"<h1>ltbench report</h1>\n<p>{len(runs)} finished run{'s' if len(runs) != 1 else ''} on "
            f"{esc(', '.join(labels))}, from <code>{esc(results)}</code>{f' ({esc(asked)})' if asked else ''}; "
            f"written {esc(when)} by ltbench {esc(__version__)}.</p>")


def _run_title(r: dict[str, Any]) -> str:
    return f"{r['method']} on {r['label']} ({r['backbone']}, recipe {r['recipe']}, seed {r['seed']}), run {r['run_id']}"


def _contents(runs: list[dict[str, Any]]) -> str:
    items = "".join(f'<li><a href="#run-{i}">{esc(_run_title(r))}</a>: test top-1 {_num(r["test"].get("top1"))}</li>'
                    for i, r in enumerate(runs, 1))
    return f'<nav><h2>Runs</h2>\n<ol>{items}</ol>\n<p><a href="#tables">comparison tables</a></p></nav>'


# --- comparison tables ---------------------------------------------------------------------------

def _tables(matching: list[dict[str, Any]], runs: list[dict[str, Any]], method_names: list[str],
            records: Any) -> str:
    """All benchmarks side by side (when there are several), then each benchmark with many / medium / few:
    `ltbench table`'s numbers (hyperparameters chosen on validation, mean ± std over seeds)."""
    from ..results.tables import build_table

    labels = sorted({r["label"] for r in runs})
    parts = ['<section id="tables">\n<h2>Comparison tables</h2>']
    if len(labels) > 1:
        t = build_table(matching, methods=method_names or None, columns=labels)
        parts.append(_html_table(t, [(c, "all") for c in labels], records.notes(t)))
    for label in labels:
        t = build_table(matching, methods=method_names or None, columns=[label])
        groups = [(label, g) for g in ("many", "medium", "few", "all")] + [(label, "norm_ratio")]
        parts.append(_html_table(t, groups, records.notes(t)))
    return "\n".join(parts + ["</section>"])


def _html_table(t: dict[str, Any], cells: list[tuple[str, str]], notes: list[str]) -> str:
    heads = [col if group == "all" and len({c for c, _ in cells}) > 1 else
             {"norm_ratio": "norm max/min"}.get(group, group) for col, group in cells]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["method", *heads])
    rows = []
    for name, by_col in t["rows"].items():
        tds = []
        for col, group in cells:
            cell = by_col.get(col, {})
            marks = ("†" if cell.get("selected_on_test") else "") + ("‡" if cell.get("flip_averaged") else "")
            tds.append(f"<td>{esc(_stat(cell.get(group)) + (marks if group == 'all' else ''))}</td>")
        rows.append(f"<tr><td>{esc(name)}</td>{''.join(tds)}</tr>")
    note_items = "".join(f"<li>{esc(n)}</li>" for n in [*t.get("notes", []), *notes])
    return (f"<h3>{esc(t['title'])}</h3>\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f'\n<ul class="notes">{note_items}</ul>' if note_items else ""))


def _stat(s: dict[str, Any] | None) -> str:
    """mean ± std (n) of a table cell's statistic; "-" where it has none."""
    if not s or not s.get("n") or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.2f}" if s["n"] == 1 else f"{s['mean']:.2f} ± {s['std']:.2f} ({s['n']})"


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


# --- one run ---------------------------------------------------------------------------------------

class Figures:
    """Figures drawn by the plot functions into a temporary folder, embedded as ``data:`` PNG images."""

    def __init__(self, folder: Path):
        self.folder, self.count = folder, 0

    def add(self, plot: Callable[..., Path], *args: Any, alt: str) -> str:
        path = self.folder / f"figure-{self.count + 1}.png"
        try:
            plot(*args, path)
        except LtbenchError as exc:
            return f'<p class="missing">{esc(exc)}</p>'
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a record that lacks what the figure reads
            return f'<p class="missing">this figure could not be drawn from the record ({esc(type(exc).__name__)}: {esc(exc)})</p>'
        self.count += 1
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def _run_section(i: int, r: dict[str, Any], store: Any, rd: Any, figures: Figures) -> str:
    from ..results.plots import plot_accuracy, plot_norms

    names, recorded = class_names_of(r)
    parts = [f'<section class="run" id="run-{i}">', f"<h2>{i}. {esc(_run_title(r))}</h2>", _summary(r, recorded),
             "<h3>Per-class test accuracy against training count</h3>",
             figures.add(plot_accuracy, [r], alt="per-class test accuracy against training count"),
             _class_table(r, names),
             "<h3>Classifier weight norms</h3>",
             figures.add(plot_norms, [r], alt="per-class classifier weight norms, head to tail"),
             "<h3>Test confusion</h3>", _confusion(r, figures),
             "<h3>Learning curves</h3>", _curves(r, rd, figures),
             "<h3>Settings and provenance</h3>", _settings(r, store), _provenance(r), "</section>"]
    return "\n".join(parts)


def _summary(r: dict[str, Any], names_recorded: bool) -> str:
    from .show import result_lines

    lines = [line.strip() for line in result_lines(r)]
    if "top5" not in r["test"] and len(r["class_counts"]) >= 100:
        lines.append(f"test top-5: {NOT_RECORDED}")
    if not names_recorded:
        lines.append(f"class names: {NOT_RECORDED}; classes are shown by their index")
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def _class_table(r: dict[str, Any], names: list[str]) -> str:
    """Each class head to tail: index, name, training images, test images, test accuracy, weight norm."""
    order = by_training_count(r)
    test, norms = reported_test(r), r["classifier_norms"]
    n_test = test.get("per_class_count") if isinstance(test.get("per_class_count"), list) else None
    rows = []
    for c in order[:MAX_CLASS_ROWS]:
        acc = test["per_class"][c] if c < len(test["per_class"]) else None
        cells = [c, names[c], r["class_counts"][c], n_test[c] if n_test and c < len(n_test) else "-", _num(acc),
                 f"{norms[c]:.3f}" if c < len(norms) else "-"]
        rows.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + "</tr>")
    more = (f"<p>the first {MAX_CLASS_ROWS} of {len(order)} classes, head to tail; result.json holds every class "
            "(test.per_class)</p>" if len(order) > MAX_CLASS_ROWS else "")
    head = "".join(f"<th>{h}</th>" for h in ("class", "name", "training images", "test images", "test accuracy (%)",
                                             "weight norm"))
    return (f"<details{' open' if len(order) <= MATRIX_MAX_CLASSES else ''}><summary>per-class table "
            f"({len(order)} classes, head to tail)</summary>\n<table><thead><tr>"
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</details>")


def _confusion(r: dict[str, Any], figures: Figures) -> str:
    try:
        if recorded_confusion(r) is None:
            return f'<p class="missing">test confusion: {NOT_RECORDED}. {esc(not_recorded(r))}</p>'
        hardest = hardest_confusions(r, HARDEST)
    except LtbenchError as exc:
        return f'<p class="missing">{esc(exc)}</p>'
    what = "row-normalised test confusion matrix" if len(r["class_counts"]) <= MATRIX_MAX_CLASSES else \
        f"the {HARDEST} hardest test confusions"
    rows = "".join(f"<tr><td>{esc(x['true_name'])}</td><td>{esc(x['predicted_name'])}</td><td>{x['images']} of "
                   f"{x['of']}</td><td>{x['rate']:.1f}</td></tr>" for x in hardest)
    table = ("<details><summary>hardest confusions (true class predicted as another)</summary><table><thead><tr>"
             "<th>true class</th><th>predicted as</th><th>test images</th><th>%</th></tr></thead>"
             f"<tbody>{rows}</tbody></table></details>" if hardest else "<p>no test image misclassified</p>")
    from ..results.plots import plot_confusion

    return figures.add(plot_confusion, [r], alt=what) + "\n" + table


def _curves(r: dict[str, Any], rd: Any, figures: Figures) -> str:
    if rd is None:
        return '<p class="missing">its run directory is not in the store (no metrics.jsonl)</p>'
    try:
        rows = [row for row in rd.metrics() if isinstance(row.get("epoch"), int) and isinstance(row.get("stage"), str)]
    except DamagedRecord as exc:
        return f'<p class="missing">{esc(exc)}</p>'
    if not rows:
        return "<p>no per-epoch metrics: this run trains no epochs of its own (post hoc)</p>"
    return figures.add(plot_curves, r, rows, alt="training loss and accuracies per epoch")


def plot_curves(result: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> Path:
    """Loss (left) and train / val class-mean / test accuracies (right) per epoch, the stages one after
    the other, the reported epoch dotted."""
    from ..results.plots import _pyplot, _save

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset, last_offset = 0, 0
    stages = list(dict.fromkeys(row["stage"] for row in rows))
    for stage in stages:
        mine = sorted((row for row in rows if row["stage"] == stage), key=lambda row: row["epoch"])
        xs = [offset + row["epoch"] for row in mine]
        for ax, key, what in ((left, "loss", "loss"), (right, "train_acc", "train"),
                              (right, "val_class_mean", "val class-mean"), (right, "test_top1", "test top-1")):
            pts = [(x, row[key]) for x, row in zip(xs, mine, strict=True) if _finite(row.get(key))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", ms=3,
                        label=what + (f", stage {stage}" if len(stages) > 1 else ""))
        last_offset, offset = offset, max(xs, default=offset)
    epoch = result.get("selected", {}).get("epoch")
    if isinstance(epoch, int):
        right.axvline(last_offset + epoch, ls=":", color="gray", label="reported epoch")
    left.set_ylabel("training loss")
    right.set_ylabel("accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.set_xlabel("epoch" + (" (stages one after the other)" if len(stages) > 1 else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _settings(r: dict[str, Any], store: Any) -> str:
    """`ltbench show`'s text: settings with their origins, its stage-1 run, state, result and files."""
    from .show import show_text

    try:
        text, damage = show_text(store, r["run_id"])
    except LtbenchError as exc:
        return f'<p class="missing">{esc(exc)}</p>'
    note = f'<p class="missing">{esc(damage)}</p>' if damage is not None else ""
    return f"<pre>{esc(text)}</pre>{note}"


def _provenance(r: dict[str, Any]) -> str:
    """Where the numbers come from: versions, git commit, device and host (result.json env), checksums of the
    model and of the split files, timings, the data's sources."""
    info = r.get("data_info") if isinstance(r.get("data_info"), dict) else {}
    items: list[tuple[str, Any]] = [(k, v) for k, v in (r.get("env") or {}).items()] if isinstance(r.get("env"), dict) else []
    items += [("model_sha256", r.get("model_sha256", NOT_RECORDED)),
              ("stage-1 run", r["method_record"].get("parent")), ("timings (s)", r.get("timings")),
              *((f"data {k}", info[k]) for k in ("val_source", "test_source", "split_files", "published_split_files",
                                                 "fingerprint") if k in info)]
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_short(v))}</td></tr>" for k, v in items if v is not None)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _short(v: Any, width: int = 400) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"
