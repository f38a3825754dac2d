"""Comparison tables over the records of a results store."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from .store import Store

FORMATS = {"github": "github", "latex": "latex_booktabs", "csv": None, "json": None}


def done_results(store: Store) -> list[dict[str, Any]]:
    return [rd.result() for rd in store.runs() if rd.is_done() and rd.result_file.exists()]


def _without_seed(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k != "seed"}
    if out.get("parent"):
        out["parent"] = _without_seed(out["parent"])
    return out


def _config_key(r: dict[str, Any]) -> str:
    """Everything that defines a configuration except the seed (of the run and of its stage 1)."""
    return json.dumps(_without_seed(r["spec"]), sort_keys=True)


def _flat_hparams(r: dict[str, Any]) -> dict[str, Any]:
    flat = {f"{st}.{k}": v for st, hp in r["spec"]["stages"].items() for k, v in hp.items()}
    if r["spec"].get("parent"):
        flat.update({f"stage1.{k}": v for hp in r["spec"]["parent"]["stages"].values() for k, v in hp.items()})
    flat.update({f"data.{k}": v for k, v in r["spec"]["data"].items()})
    flat["backbone"], flat["recipe"] = r["backbone"], r["recipe"]
    return flat


def _row_labels(groups: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Method name, plus the settings that tell apart several configurations of the same method."""
    by_method: dict[str, list[str]] = defaultdict(list)
    for key, rs in groups.items():
        by_method[rs[0]["method"]].append(key)
    labels = {}
    for method, keys in by_method.items():
        flats = {k: _flat_hparams(groups[k][0]) for k in keys}
        differing = sorted({h for f in flats.values() for h in f
                            if len({json.dumps(g.get(h)) for g in flats.values()}) > 1 and not h.startswith("data.")})
        for k in keys:
            extra = ", ".join(f"{h.split('.', 1)[-1] if h.startswith(('train.', 'stage2.', 'posthoc.')) else h}="
                              f"{flats[k].get(h)}" for h in differing)
            labels[k] = f"{method} ({extra})" if extra else method
    return labels


def _stat(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _fmt(s: dict[str, Any]) -> str:
    if s["n"] == 0 or s["mean"] is None:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.2f}"
    return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['n']})"


def build_table(results: Iterable[dict[str, Any]], datasets: list[str] | None = None,
                methods: list[str] | None = None) -> dict[str, Any]:
    """Rows: configurations (method + the settings that differ), columns: benchmark instances;
    cells: test accuracy of the selected checkpoint, mean/std over seeds. With a single benchmark
    the columns are many / medium / few / all instead, and the spread of the per-class classifier
    weight norms (largest / smallest row norm: 1 is perfectly balanced)."""
    rs = [r for r in results if (not datasets or r["benchmark"] in datasets) and (not methods or r["method"] in methods)]
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rs:
        by_config[_config_key(r)].append(r)
    labels = _row_labels(by_config)
    bench_labels = sorted({r["label"] for r in rs})
    per_benchmark = len(bench_labels) == 1
    columns = ["many", "medium", "few", "all", "norm max/min"] if per_benchmark else bench_labels
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, group in by_config.items():
        row = rows[labels[key]]
        if per_benchmark:
            for col, field in (("many", "many"), ("medium", "medium"), ("few", "few"), ("all", "top1")):
                row[col] = _stat([r["test"][field] for r in group])
            row["norm max/min"] = _stat([max(r["classifier_norms"]) / min(r["classifier_norms"]) for r in group])
        else:
            row[group[0]["label"]] = _stat([r["test"]["top1"] for r in group])
        row["seeds"] = sorted(r["seed"] for r in group)
    title = f"{bench_labels[0]}: test top-1 (%)" if per_benchmark else "test top-1 (%)"
    return {"title": title, "columns": columns, "rows": dict(sorted(rows.items())), "n_records": len(rs)}


def render(table: dict[str, Any], fmt: str = "github") -> str:
    if fmt == "json":
        return json.dumps(table, indent=2, sort_keys=True)
    cols = table["columns"]
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["method"] + [f"{c} {s}" for c in cols for s in ("mean", "std", "n")])
        for name, row in table["rows"].items():
            cells = []
            for c in cols:
                s = row.get(c, {"mean": None, "std": None, "n": 0})
                cells += ["" if s["mean"] is None else f"{s['mean']:.4f}",
                          "" if s["std"] is None else f"{s['std']:.4f}", s["n"]]
            w.writerow([name] + cells)
        return buf.getvalue()
    body = [[name] + [_fmt(row.get(c, {"n": 0, "mean": None})) for c in cols] for name, row in table["rows"].items()]
    return tabulate(body, headers=["method"] + cols, tablefmt=FORMATS[fmt], disable_numparse=True)
