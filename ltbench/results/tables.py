"""Comparison tables over the records of a results store.

Rows are methods (plus weight balancing's stage 1, and published-only rows with --reference),
columns are benchmark instances (the WB paper's five by default). Each cell averages the runs of one
configuration over seeds: mean, std and the number of seeds. With ``select="val"`` a row's
configuration (its hyperparameters) is chosen per column on the validation split, and the test
accuracy of each run's selected checkpoint is reported; ``select="last"`` uses no validation at all:
every configuration is a row and the last epoch is reported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import DamagedRecord
from ..spec.run_spec import differences, flat_settings, non_defaults
from ..spec.schema import settings_of
from .params import pretraining_notes, shows_trainable, trainable, trainable_text
from .reference import DEFAULT_COLUMNS, EXTRA_COLUMNS, FILL, PUBLISHED, published
from .store import EVAL_SHAPE, Store, read_json, shape_problem

FORMATS = ("github", "markdown", "latex", "csv", "csv-wide", "json")
GROUPS = ("many", "medium", "few", "all")


@dataclass(frozen=True)
class RowLayout:
    """The rows of a table as the registered methods declare them (Method.presentation)."""

    order: dict[str, float]  # row name -> sort key
    stage1_rows: dict[str, str]  # method -> the row of the stage-1 run it builds on (weight balancing's)

    @staticmethod
    def from_registry() -> RowLayout:
        from ..registry import methods

        order, stage1_rows = {}, {}
        for e in methods.entries():
            shown = e.obj.presentation
            order[e.name] = float(shown.order)
            row = shown.stage1_row
            if row is not None:
                stage1_rows[e.name] = row[0]
                order[row[0]] = float(row[1])
        return RowLayout(order, stage1_rows)

    def base(self, name: str) -> str:
        """The method (or stage-1 row) a row belongs to: "ce (weight_decay=0.005)" -> "ce",
        "wb stage 1 (ce + tuned WD) (train.epochs=3)" -> "wb stage 1 (ce + tuned WD)"."""
        head = name
        while head not in self.order and " (" in head:
            head = head.rsplit(" (", 1)[0]
        return head if head in self.order else name.split(" (")[0]

    def sort_key(self, name: str) -> tuple[float, str, list[tuple[int, float, str]]]:
        """The methods' declared order, then the rows of one method by their settings' values as numbers
        ("lr=0.05" before "lr=0.1", "epochs=3" before "epochs=40"), not as text."""
        base = self.base(name)
        return (self.order.get(base, math.inf), base, natural_key(name[len(base):]))

    def method_of(self, row: str) -> str:
        """The method whose run fills a row (a stage-1 row: the method that builds on it)."""
        return next((m for m, r in self.stage1_rows.items() if r == row), self.base(row))

    def with_stage1(self, methods: Iterable[str]) -> set[str]:
        return set(methods) | {self.stage1_rows[m] for m in methods if m in self.stage1_rows}


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def natural_key(text: str) -> list[tuple[int, float, str]]:
    """``text`` as a sort key in which numbers compare as numbers: 5e-05 < 0.0005 < 0.001 < 0.01."""
    key: list[tuple[int, float, str]] = []
    pos = 0
    for m in _NUMBER.finditer(text):
        if m.start() > pos:
            key.append((0, 0.0, text[pos:m.start()]))
        key.append((1, float(m.group()), ""))
        pos = m.end()
    if pos < len(text):
        key.append((0, 0.0, text[pos:]))
    return key


@dataclass
class Records:
    """The finished runs of a store: the records that read, and the damaged ones (left out)."""

    results: list[dict[str, Any]]
    damaged: list[DamagedRecord]
    run_ids: set[str]  # every run directory of the store, finished or not
    root: Path

    def notes(self, shown: dict[str, Any] | None = None) -> list[str]:
        """Footnotes: the damaged records left out, and the stage-2 records (of the table ``shown``, else
        all) whose stage-1 run directory is gone."""
        notes = []
        if self.damaged:
            n = len(self.damaged)
            what = "; ".join(f"{d.path} {d.problem}" for d in self.damaged)
            notes.append(f"{n} record{'s' if n > 1 else ''} left out as damaged: {what}; `ltbench status` lists "
                         f"{'them' if n > 1 else 'it'}")
        orphans: dict[str, list[str]] = defaultdict(list)
        for r in self.results:
            parent = r["method_record"].get("parent")
            if isinstance(parent, str) and parent not in self.run_ids and (shown is None or (
                    r["label"] in shown["columns"] and any(row.split(" (")[0] == r["method"] for row in shown["rows"]))):
                orphans[parent].append(f"{r['method']} {r['run_id']}")
        for parent, users in orphans.items():
            notes.append(f"{', '.join(users)} build{'s' if len(users) == 1 else ''} on stage-1 run {parent}, which is "
                         f"no longer in {self.root}; `ltbench run` with the same selectors retrains it "
                         "(content-addressed)")
        return notes


def read_records(store: Store, benchmarks: list[str] | None = None, evals: bool = False) -> Records:
    """The records of the finished runs (of ``benchmarks``, by name, where given); a run whose
    spec.json or result.json does not read is left out and listed in ``damaged``, never raised.
    ``evals``: the `ltbench eval` records too, as table rows of their own (``eval_as_run``)."""
    results, damaged, run_ids = [], [], set()
    for rd in store.runs():
        run_ids.add(rd.run_id)
        if not rd.is_done() or (benchmarks and rd.path.parent.parent.name not in benchmarks):
            continue
        try:
            rd.spec()
            results.append(rd.result())
        except DamagedRecord as exc:
            damaged.append(exc)
    for ed in store.evals() if evals else []:
        if not ed.is_done() or (benchmarks and ed.path.parent.name not in benchmarks):
            continue
        value, problem = read_json(ed.result_file)
        problem = problem or shape_problem(value, EVAL_SHAPE)
        if problem:
            damaged.append(DamagedRecord(ed.result_file, problem, f"delete {ed.path} and run the same `ltbench "
                                         "eval` command again"))
        else:
            results.append(eval_as_run(value))
    return Records(results, damaged, run_ids, store.root)


EVAL_ROW = "{method} (eval of {source_run})"  # the row of an `ltbench eval` record


def is_eval(r: dict[str, Any]) -> bool:
    """An `ltbench eval` record (``eval_as_run``), not a run's."""
    return r.get("selected", {}).get("rule") == "eval"


def eval_as_run(e: dict[str, Any]) -> dict[str, Any]:
    """An `ltbench eval` record in the form build_table reads a run's: its scores as the test report,
    no validation score, its own row (``EVAL_ROW``) and configuration (its spec), the source run's seed."""
    spec = {"backbone": e.get("backbone", ""), "recipe": e.get("recipe", ""), "data": e["spec"].get("data", {}),
            "stages": {}, "eval": e["spec"]}
    return {"run_id": e["eval_id"], "method": e["method"], "table_row": EVAL_ROW.format(**e), "label": e["label"],
            "benchmark": e["benchmark"], "seed": e["source_seed"], "spec": spec, "test": e["scores"],
            "val": {"class_mean": None}, "selected": {"rule": "eval"}, "classifier_norms": e["classifier_norms"],
            "class_counts": e["class_counts"], "method_record": {"eval_of": e["source_run"]}}


def done_results(store: Store) -> list[dict[str, Any]]:
    """The records of the finished runs that read (``read_records`` also says which did not)."""
    return read_records(store).results


def _without_seed(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k != "seed"}
    if out.get("parent"):
        out["parent"] = _without_seed(out["parent"])
    return out


def _config_key(r: dict[str, Any]) -> str:
    """Everything that defines a configuration except the seed (of the run and of its stage 1)."""
    return json.dumps(_without_seed(r["spec"]), sort_keys=True)


def describe_differences(configs: list[list[dict[str, Any]]]) -> list[str]:
    """For each configuration, the settings that tell it apart from the others ("" if none); the
    benchmark's own parameters (data.*) are the column's, not the row's."""
    diffs = differences([c[0]["spec"] for c in configs])
    return [", ".join(f"{_short(h)}={v}" for h, v in d.items() if not h.startswith("data.")) for d in diffs]


def _short(h: str) -> str:
    """A setting's name in a row or note: a one-stage method's keys without their stage."""
    return h.split(".", 1)[-1] if h.startswith(("train.", "stage2.", "posthoc.")) else h


def _stat(values: list[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": round(statistics.fmean(vals), 2), "std": round(std, 2), "n": len(vals)}


def _test_report(r: dict[str, Any], select: str) -> dict[str, Any]:
    if select == "last":
        return r.get("selected", {}).get("last_epoch_test") or r["test"]
    if _flip_averaged(r):
        return r["test_flip_avg"]
    return r["test"]


def _flip_averaged(r: dict[str, Any]) -> bool:
    """The run reports the flip-averaged test accuracy (data.report=test_flip_avg, the WB authors' code)."""
    return settings_of(r["spec"]["data"]).report == "test_flip_avg" and bool(r.get("test_flip_avg"))


def _val_score(rs: list[dict[str, Any]]) -> float:
    vals = [r["val"]["class_mean"] for r in rs if r["val"].get("class_mean") is not None]
    return statistics.fmean(vals) if vals else float("-inf")


STANDARD_SHOTS = {"many": "n > 100", "medium": "20 <= n <= 100", "few": "n < 20"}  # the literature's rule


def _shot_rule_notes(rs: list[dict[str, Any]], per_benchmark: bool) -> list[str]:
    """A table of many / medium / few columns states the rule that made the groups when its data chose it
    (a user's image folder, whose thresholds are data.many_above / data.few_below) or when it is not the
    literature's (n > 100 many, n < 20 few, on training images per class)."""
    if not per_benchmark:
        return []
    rules = {json.dumps({k: r["shot_rule"][k] for k in STANDARD_SHOTS}, sort_keys=True) for r in rs
             if isinstance(r.get("shot_rule"), dict) and all(k in r["shot_rule"] for k in STANDARD_SHOTS)}
    chosen = any(r.get("benchmark") == "imagefolder" for r in rs)
    if not rules or (not chosen and rules == {json.dumps(STANDARD_SHOTS, sort_keys=True)}):
        return []
    return ["many / medium / few: the classes with " + ", ".join(f"{json.loads(rule)[g]} ({g})" for g in STANDARD_SHOTS)
            + " training images" for rule in sorted(rules)]


def build_table(results: Iterable[dict[str, Any]], *, benchmarks: list[str] | None = None,
                methods: list[str] | None = None, columns: list[str] | None = None, select: str = "val",
                reference: bool = False, mix_protocols: bool = False) -> dict[str, Any]:
    """The table as data: every format renders this, so every format shows the same numbers.

    ``benchmarks`` filters by benchmark name, ``columns`` fixes the column labels (default: the WB
    paper's five, plus any other benchmark instance that has records). With one column the cells
    are many / medium / few / all of that benchmark.
    """
    rs = [r for r in results if not benchmarks or r["benchmark"] in benchmarks]
    layout = RowLayout.from_registry()
    stage1_of = {r["method_record"].get("parent"): layout.stage1_rows[r["method"]] for r in rs
                 if r["method"] in layout.stage1_rows}
    columns_given = columns is not None
    if columns is None:
        have = sorted({r["label"] for r in rs})
        columns = have if benchmarks else \
            DEFAULT_COLUMNS + [c for c in EXTRA_COLUMNS if c in have] + [c for c in have if c not in DEFAULT_COLUMNS + EXTRA_COLUMNS]
    rs = [r for r in rs if r["label"] in columns]
    per_benchmark = len(columns) == 1

    # candidate rows: (row name, column) -> configuration -> runs
    cand: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rs:
        names = [r.get("table_row", r["method"])]
        if r["run_id"] in stage1_of and select == "val":
            names.append(stage1_of[r["run_id"]])
        for name in names:
            cand[(name, r["label"])][_config_key(r)].append(r)

    rows, notes = _choose_rows(cand, select, mix_protocols)
    if select == "val" and any("tuned" in r for r in rs):  # `ltbench tune` rows (ltbench.tune.rows): notes, effort
        notes += _tuning_effort(rows, cand, mix_protocols)

    if methods:
        keep = layout.with_stage1(methods)
        rows = defaultdict(dict, {k: v for k, v in rows.items() if layout.base(k) in keep})
        notes = [n for n in notes if layout.base(n.split(" on ", 1)[0]) in keep]
        if not columns_given:  # no column that only other methods' runs fill
            shown = {col for cells in rows.values() for col in cells}
            columns = [c for c in columns if c in shown or (c in DEFAULT_COLUMNS and not benchmarks)]
            per_benchmark = len(columns) == 1
    missing = []
    if reference:
        notes += _add_published(rows, columns, methods, layout)
        missing = _missing(rows, columns, results, layout)
    notes += _general_notes(rows, rs, columns, per_benchmark)
    ordered = dict(sorted(rows.items(), key=lambda kv: layout.sort_key(kv[0])))
    return {"title": _title(rows, columns, per_benchmark, select), "columns": columns, "per_benchmark": per_benchmark,
            "rows": ordered, "select": select, "reference": reference, "notes": notes, "missing": missing,
            "n_records": len(rs)}


def _cells_with_runs(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for cs in rows.values() for c in cs.values() if c.get("seeds")]


def _general_notes(rows: dict[str, dict[str, Any]], rs: list[dict[str, Any]], columns: list[str],
                   per_benchmark: bool) -> list[str]:
    """The notes that explain the table's marks and conventions: eval rows, the shot rule, pretraining on the
    benchmark's images, iNaturalist's val set, † (selected on test) and ‡ (flip-averaged)."""
    notes = []
    if any(row.endswith(")") and " (eval of " in row for row in rows):
        notes.append("eval of RUN: `ltbench eval` scores of that run's model on another benchmark instance (no "
                     "selection; many/medium/few by the run's own training counts)")
    notes += _shot_rule_notes(rs, per_benchmark) + pretraining_notes(rs)  # pretrained on the benchmark's images
    if any("iNaturalist" in c for c in columns):
        notes.append("iNaturalist 2018: selected and reported on its val set (the benchmark's convention)")
    cells = _cells_with_runs(rows)
    if any(c.get("selected_on_test") for c in cells):
        notes.append("†: checkpoint chosen on the test set (labelled, not a clean protocol)")
    if any(c.get("flip_averaged") for c in cells):
        notes.append("‡: test accuracy averaged over each image and its mirror image (data.report=test_flip_avg, "
                     "as the WB authors' code reports)")
    return notes


def _title(rows: dict[str, dict[str, Any]], columns: list[str], per_benchmark: bool, select: str) -> str:
    cells = _cells_with_runs(rows)
    on_test = [c for c in cells if c.get("selected_on_test")]
    if select == "last":
        kind = "last epoch"
    elif on_test and len(on_test) == len(cells):
        kind = "checkpoints selected on test †"
    else:
        kind = "selected on validation" + (" († on test)" if on_test else "")
    return f"{columns[0]}: test top-1 (%), {kind}" if per_benchmark else f"test top-1 (%), {kind}"


# with every stage's epochs and tuning mode: what a table never chooses across by default
PROTOCOL_KEYS = ("backbone", "recipe", "backbone.weights")


def protocol_of(spec: dict[str, Any]) -> dict[str, Any]:
    """What makes runs different experiments rather than different hyperparameters of one: the
    backbone (and its weights), the recipe, each stage's number of epochs and tuning mode (the stage-1 run's too)."""
    return {k: v for k, v in flat_settings(spec).items() if _is_protocol_key(k)}


def _by_protocol(groups: list[list[dict[str, Any]]]) -> list[tuple[str, list[list[dict[str, Any]]]]]:
    """The configurations of one cell split by protocol (``protocol_of``), each with what tells its
    protocol apart from the others' ("" when there is one)."""
    split: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for g in groups:
        split[json.dumps(protocol_of(g[0]["spec"]), sort_keys=True)].append(g)
    parts = list(split.values())
    if len(parts) == 1:
        return [("", parts[0])]
    labels = differences([p[0][0]["spec"] for p in parts])
    named = [", ".join(f"{_short(k)}={v}" for k, v in d.items() if _is_protocol_key(k)) for d in labels]
    plain = next((i for i, p in enumerate(parts) if _is_default_protocol(p[0][0]["spec"])), None)
    if plain is None:  # none is the method's default: the longest training keeps the plain name
        plain = max(range(len(parts)), key=lambda i: sum(v for k, v in protocol_of(parts[i][0][0]["spec"]).items()
                                                         if k.endswith(".epochs") and isinstance(v, int | float)))
    return [("" if i == plain else name, p) for i, (name, p) in enumerate(zip(named, parts, strict=True))]


def _is_protocol_key(key: str) -> bool:
    return key in PROTOCOL_KEYS or key.endswith((".epochs", ".tuning"))


def _is_default_protocol(spec: dict[str, Any]) -> bool:
    """The run has the protocol `ltbench run` gives its method and benchmark by default: that row keeps
    the method's plain name (the others say how they differ)."""
    return not any(_is_protocol_key(k) for k in non_defaults(spec))


def _among(groups: list[list[dict[str, Any]]]) -> str:
    """What a choice on validation chose among: each setting that varies, with its values."""
    values: dict[str, list[Any]] = defaultdict(list)
    for d in differences([g[0]["spec"] for g in groups]):
        for k, v in d.items():
            if not k.startswith("data.") and v not in values[k]:
                values[k].append(v)
    return "; ".join(f"{_short(k)} " + ", ".join(str(v) for v in sorted(vs, key=lambda v: natural_key(str(v))))
                     for k, vs in values.items())


def _choose_rows(cand: dict[tuple[str, str], dict[str, list[dict[str, Any]]]],
                 select: str, mix_protocols: bool = False) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The cells of each (row, column) from its configurations: under ``val`` the configuration best on
    validation (a note says which won, and among what), under ``last`` every configuration as a row of
    its own. Runs of different protocols (backbone, recipe, epochs: ``protocol_of``) are rows of their
    own, never chosen among, unless ``mix_protocols``."""
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    notes: list[str] = []
    for (name, col), configs in sorted(cand.items()):
        groups = list(configs.values())
        if select != "val":
            for d, g in zip(describe_differences(groups), groups, strict=True):
                rows[f"{name} ({d})" if d else name][col] = _cell(g, select)
            continue
        protocols = [("", groups)] if mix_protocols else _by_protocol(groups)
        if len(protocols) > 1:
            notes.append(f"{name} on {col}: runs of {len(protocols)} protocols (epochs, recipe, backbone or tuning) are "
                         "rows of their own; `--mix-protocols` chooses among them on validation")
        for label, gs in protocols:
            row_name = f"{name} ({label})" if label else name
            best = max(gs, key=_val_score)
            if len(gs) > 1:
                diff = describe_differences(gs)[gs.index(best)]
                notes.append(f"{row_name} on {col}: {diff} chosen on validation among {len(gs)} configurations "
                             f"({_among(gs)})")
            rows[row_name][col] = _cell(best, select)
    return rows, notes


def _cell(group: list[dict[str, Any]], select: str) -> dict[str, Any]:
    """One table cell from the seeds of one configuration: mean ± std of each group's accuracy, the
    spread of the classifier norms, and its marks († selected on test, ‡ flip-averaged)."""
    reports = [_test_report(r, select) for r in group]
    cell: dict[str, Any] = {g: _stat([rep["top1" if g == "all" else g] for rep in reports]) for g in GROUPS}
    cell["seeds"] = sorted(r["seed"] for r in group)
    cell["norm_ratio"] = _stat([max(r["classifier_norms"]) / min(r["classifier_norms"]) for r in group
                                if min(r["classifier_norms"]) > 0])
    cell["selected_on_test"] = any(r["selected"].get("rule") == "test" for r in group)
    if shows_trainable(group):  # tuned or pretrained: the trainable parameters (ltbench.results.params)
        cell["trainable"] = trainable(group)
    if select != "last" and any(_flip_averaged(r) for r in group):
        cell["flip_averaged"] = True
    return cell


def _add_published(rows: dict[str, dict[str, Any]], columns: list[str], methods: list[str] | None,
                   layout: RowLayout) -> list[str]:
    """Put the published numbers (and our difference to them) into the cells, adding the published rows
    that have no records; the notes that cite the sources."""
    wanted = layout.with_stage1(methods or [])
    own_rows = {p.row for p in PUBLISHED if p.row != layout.base(p.row)}
    for p_row in {p.row for p in PUBLISHED if p.column in columns}:
        if not methods or layout.base(p_row) in wanted:
            rows.setdefault(p_row, {})
    for row_name, cells in rows.items():
        for col in columns:
            # a row that is a published row of its own (e.g. LIFT on another backbone) never takes its base's numbers
            p = published(row_name, col) or (None if row_name in own_rows else published(layout.base(row_name), col))
            if p is None:
                continue
            cell = cells.setdefault(col, {g: {"mean": None, "std": None, "n": 0} for g in GROUPS})
            cell["paper"] = {"many": p.many, "medium": p.medium, "few": p.few, "all": p.all, "source": p.source,
                             **({"setup": p.setup} if p.setup else {})}
            for g in GROUPS:
                ours, theirs = cell[g]["mean"], cell["paper"][g]
                cell[g]["delta"] = round(ours - theirs, 2) if ours is not None and theirs is not None else None
    return sorted({f"paper: {cells[c]['paper']['source']}" + (f" ({cells[c]['paper']['setup']})"
                                                             if cells[c]['paper'].get('setup') else "")
                   for cells in rows.values() for c in cells if "paper" in cells[c]})


def _missing(rows: dict[str, dict[str, Any]], columns: list[str], results: Iterable[dict[str, Any]],
             layout: RowLayout) -> list[dict[str, Any]]:
    """Per column, the rows ltbench can fill that have no records, with the command that fills them."""
    known = set(layout.order)
    missing = []
    for col in columns:
        todo = [r for r in sorted(rows, key=layout.sort_key) if rows[r].get(col, {}).get("all", {}).get("n", 0) == 0
                and layout.base(r) in known and r == layout.base(r)]  # not "X (backbone=...)": the command is X's
        names = list(dict.fromkeys(layout.method_of(r) for r in todo))
        if names:
            how = FILL.get(col) or _fill_from_records(col, results)
            missing.append({"column": col, "rows": todo,
                            "command": f"ltbench run --method {','.join(names)} {how} --seed 0,1,2"})
    return missing


def _fill_from_records(col: str, results: Iterable[dict[str, Any]]) -> str:
    for r in results:
        if r["label"] == col:
            extra = f" --imbalance {r['spec']['data']['imbalance']:g}" if "imbalance" in r["spec"]["data"] else ""
            return f"--dataset {r['benchmark']}{extra}"
    return "--dataset ?"


# --- rendering -------------------------------------------------------------------------------------

def _marks(cell: dict[str, Any]) -> str:
    """† checkpoint chosen on test, ‡ flip-averaged test accuracy."""
    return ("†" if cell.get("selected_on_test") else "") + ("‡" if cell.get("flip_averaged") else "")


def _fmt(s: dict[str, Any] | None, pm: str = "±") -> str:
    if not s or s.get("n", 0) == 0 or s.get("mean") is None:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.2f}"
    return f"{s['mean']:.2f} {pm} {s['std']:.2f} ({s['n']})"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _header_and_body(t: dict[str, Any], pm: str = "±") -> tuple[list[str], list[list[str]]]:
    ref = t["reference"]
    if t["per_benchmark"]:
        col = t["columns"][0]
        header = ["method"] + [h for g in GROUPS for h in ([g, "paper", "Δ"] if ref and g == "all" else [g])]
        header += ["norm max/min"] + (["effort"] if _has_effort(t) else [])
        header += ["trainable"] if _has_trainable(t) else []
        body = []
        for name, cells in t["rows"].items():
            c = cells.get(col, {})
            line = [name]
            for g in GROUPS:
                cell = _fmt(c.get(g), pm) + (_marks(c) if g == "all" else "")
                if ref and g != "all" and c.get("paper", {}).get(g) is not None:
                    cell += f" [{c['paper'][g]:.2f}]"
                line.append(cell)
                if ref and g == "all":
                    line += [_num(c.get("paper", {}).get("all")), _num(c.get("all", {}).get("delta"))]
            line.append(_fmt(c.get("norm_ratio"), pm))
            line += [_effort(c.get("effort"))] if _has_effort(t) else []
            body.append(line + ([trainable_text(c.get("trainable"))] if _has_trainable(t) else []))
        return header, body
    header = ["method"] + [h for col in t["columns"] for h in ([col, "paper", "Δ"] if ref else [col])]
    header += ["effort"] if _has_effort(t) else []
    body = []
    for name, cells in t["rows"].items():
        line = [name]
        for col in t["columns"]:
            c = cells.get(col, {})
            line.append(_fmt(c.get("all"), pm) + _marks(c))
            if ref:
                line += [_num(c.get("paper", {}).get("all")), _num(c.get("all", {}).get("delta"))]
        body.append(line + ([_effort([c.get("effort") for c in cells.values()])] if _has_effort(t) else []))
    return header, body


def _has_trainable(t: dict[str, Any]) -> bool:
    """A table with a tuned or pretrained backbone's row has a trainable-parameters column."""
    return any("trainable" in c for cells in t["rows"].values() for c in cells.values())


def _has_effort(t: dict[str, Any]) -> bool:
    """A table with `ltbench tune` rows has an effort column (``_tuning_effort``)."""
    return any("effort" in c for cells in t["rows"].values() for c in cells.values())


def _tuning_effort(rows: dict[str, dict[str, Any]], cand: dict[tuple[str, str], dict[str, list[dict[str, Any]]]],
                   mix_protocols: bool = False) -> list[str]:
    """For a table with `ltbench tune` rows (records with ``tuned``: ltbench.tune.rows): the effort behind
    each cell (``cell["effort"]``: a tuned row's trials and the device seconds of its study's runs; else the
    configurations validation chose among and the device seconds of their runs and stage-1 runs), and the
    notes that say how each tuned row was tuned."""
    by_id = {r["run_id"]: r for cs in cand.values() for g in cs.values() for r in g}
    notes = []
    for (name, col), configs in sorted(cand.items()):
        groups = list(configs.values())
        for label, gs in ([("", groups)] if mix_protocols else _by_protocol(groups)):
            cell = rows.get(f"{name} ({label})" if label else name, {}).get(col)
            tuned = gs[0][0].get("tuned")
            if cell is None:
                continue
            if tuned is not None:
                cell["effort"] = {"trials": tuned["trials"], "device_s": round(tuned["device_s"], 1)}
                extra = ", ".join(f"{tuned[k]} {k}" for k in ("pruned", "failed") if tuned[k])
                notes.append(f"{name} on {col}: tuned on validation: {tuned['trials']} trials"
                             + (f" ({extra})" if extra else "") + f", {tuned['how']}; {tuned['values']} (study "
                             f"{tuned['study']}; `ltbench plot tune {tuned['study']}`)")
                continue
            runs = [r for g in gs for r in g]
            parents = {r["method_record"].get("parent") for r in runs} - {None}
            seconds = sum(map(_run_seconds, runs)) + sum(_run_seconds(by_id[p]) for p in parents if p in by_id)
            cell["effort"] = {"configurations": len(gs), "device_s": round(seconds, 1)}
    return notes


def _run_seconds(r: dict[str, Any]) -> float:
    t = r.get("timings") or {}
    return float(t.get("train_s", 0) or 0) + float(t.get("final_eval_s", 0) or 0)


def _effort(effort: list[dict[str, Any]] | dict[str, Any] | None) -> str:
    """An effort cell: "30 trials, 1.20 h" for a tuned row, "2 configs, 4.0 min" for a recipe row; the cells
    of a row (several columns) summed."""
    cells = [effort] if isinstance(effort, dict) else [e for e in effort or [] if e]
    if not cells:
        return "-"
    trials, configs = sum(e.get("trials", 0) for e in cells), sum(e.get("configurations", 0) for e in cells)
    s = sum(e.get("device_s", 0.0) for e in cells)
    time = f"{s:.0f} s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"
    return f"{trials} trials, {time}" if trials else f"{configs} config{'s' if configs != 1 else ''}, {time}"


def _footer(t: dict[str, Any]) -> list[str]:
    lines = [f"- {n}" for n in t["notes"]]
    if t["missing"]:
        lines.append("missing cells, and the commands that fill them:")
        lines += [f"- {m['column']} ({', '.join(m['rows'])}): {m['command']}" for m in t["missing"]]
    return lines


# What tabulate's LaTeX leaves as it is and a plain LaTeX document cannot typeset.
LATEX_SYMBOLS = (("Δ", r"$\Delta$"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("±", r"$\pm$"))


def _latex_symbols(s: str) -> str:
    for a, b in LATEX_SYMBOLS:
        s = s.replace(a, b)
    return s


def _latex_escape(s: str) -> str:
    """A footnote line as a LaTeX comment's text: TeX's special characters escaped, symbols typeset."""
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        s = s.replace(a, b)
    return _latex_symbols(s)


BOLD_NOTE = ("bold: the best mean of each accuracy column (ties: each), among this table's own runs; published "
             "numbers (paper) are not compared")


def _best(t: dict[str, Any], header: list[str]) -> dict[tuple[int, int], dict[str, Any]]:
    """The (row, column) positions in the body of ``_header_and_body`` that hold the highest mean of their
    accuracy column (a benchmark's all; many, medium, few and all of a one-benchmark table), ties all,
    with their statistics; only our runs' means (n > 0), never a published number."""
    names = list(t["rows"])
    where = {g: (t["columns"][0], g) for g in GROUPS} if t["per_benchmark"] else {c: (c, "all") for c in t["columns"]}
    best = {}
    for j, h in enumerate(header):
        if j == 0 or h not in where:
            continue
        col, g = where[h]
        stats = {i: t["rows"][n].get(col, {}).get(g, {}) for i, n in enumerate(names)}
        stats = {i: s for i, s in stats.items() if s.get("n", 0) > 0 and s.get("mean") is not None}
        top = max((s["mean"] for s in stats.values()), default=None)
        best.update({(i, j): s for i, s in stats.items() if s["mean"] == top})
    return best


def _tex(text: str) -> str:
    """A cell's text with TeX's special characters escaped, as tabulate's latex_booktabs escapes them."""
    from tabulate import LATEX_ESCAPE_RULES

    return "".join(LATEX_ESCAPE_RULES.get(ch, ch) for ch in text)


def _latex(t: dict[str, Any]) -> str:
    """A booktabs table, numbers right-aligned, the best mean of each accuracy column in \\textbf (``_best``;
    its marks and published numbers stay outside), the footnotes as comments."""
    header, body = _header_and_body(t)
    best = _best(t, header)
    cells = []
    for i, line in enumerate(body):
        row = []
        for j, text in enumerate(line):
            number = _fmt(best[(i, j)]) if (i, j) in best else ""  # the start of the cell's text
            row.append(f"\\textbf{{{number}}}{_tex(text[len(number):])}" if number else _tex(text))
        cells.append(row)
    table = tabulate(cells, headers=[_tex(h) for h in header], tablefmt="latex_raw", disable_numparse=True,
                     colalign=("left",) + ("right",) * (len(header) - 1)).split("\n")
    rules = [k for k, line in enumerate(table) if line == "\\hline"]  # latex_raw's rules -> booktabs'
    for k, rule in zip(rules, ("\\toprule", "\\midrule", "\\bottomrule"), strict=True):
        table[k] = rule
    notes = _footer(t) + ([f"- {BOLD_NOTE}"] if best else [])
    return "\n".join([_latex_symbols("\n".join(table)), *(f"% {_latex_escape(line)}" for line in notes)])


def _markdown(t: dict[str, Any]) -> str:
    """A pipe table (numbers right-aligned, ``|`` escaped in cells), then the notes as a list after a
    blank line, and the commands that fill missing cells as code."""
    header, body = _header_and_body(t)
    md = [[cell.replace("|", "\\|") for cell in line] for line in [header, *body]]
    table = tabulate(md[1:], headers=md[0], tablefmt="pipe", disable_numparse=True,
                     colalign=("left",) + ("right",) * (len(header) - 1))
    lines = [f"- {n}" for n in t["notes"]]
    if t["missing"]:
        lines += ["", "Missing cells, and the commands that fill them:", ""]
        lines += [f"- {m['column']} ({', '.join(m['rows'])}): `{m['command']}`" for m in t["missing"]]
    return "\n".join([table, *([""] + lines if lines else [])])


WIDE_STATS = ("mean", "std", "n")


def _csv_wide(t: dict[str, Any]) -> str:
    """One line per row, one column per benchmark column x group x statistic (``COLUMN/GROUP/STAT``: mean,
    std, n; paper and delta with --reference), then ``COLUMN/marks`` (†, ‡); numbers as the table holds
    them (means and stds rounded to 2 decimals), an empty cell where there is none."""
    stats = WIDE_STATS + (("paper", "delta") if t["reference"] else ())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method"] + [f"{col}/{g}/{s}" for col in t["columns"] for g in GROUPS for s in stats]
               + [f"{col}/marks" for col in t["columns"]])
    for name, cells in t["rows"].items():
        line: list[Any] = [name]
        for col in t["columns"]:
            c = cells.get(col, {})
            for g in GROUPS:
                stat = {**c.get(g, {"mean": None, "std": None, "n": 0}), "paper": c.get("paper", {}).get(g)}
                line += ["" if stat.get(s) is None else stat[s] for s in stats]
        w.writerow(line + [_marks(cells.get(col, {})) for col in t["columns"]])
    return buf.getvalue()


def render(t: dict[str, Any], fmt: str = "github") -> str:
    if fmt == "json":
        return json.dumps(t, indent=2, sort_keys=True, ensure_ascii=False)
    if fmt == "markdown":
        return _markdown(t)
    if fmt == "csv-wide":
        return _csv_wide(t)
    if fmt == "latex":
        return _latex(t)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "column", "group", "mean", "std", "n", "paper", "delta"])
        for name, cells in t["rows"].items():
            for col in t["columns"]:
                c = cells.get(col, {})
                for g in GROUPS:
                    s = c.get(g, {"mean": None, "std": None, "n": 0})
                    paper = c.get("paper", {}).get(g)
                    w.writerow([name, col, g, _num(s["mean"]) if s["mean"] is not None else "",
                                _num(s["std"]) if s["std"] is not None else "", s["n"],
                                "" if paper is None else f"{paper:.2f}",
                                "" if s.get("delta") is None else f"{s['delta']:.2f}"])
        return buf.getvalue()
    header, body = _header_and_body(t)
    if fmt == "github":
        return "\n".join([tabulate(body, headers=header, tablefmt="github", disable_numparse=True), *_footer(t)])
    raise ValueError(f"unknown format {fmt!r}")
