"""The Python API, for notebooks and scripts: ``ltbench.run`` and ``ltbench.table``.

They take the command line's names and defaults and go through the code that `ltbench run` and
`ltbench table` use (this module holds that shared code: the selection of runs, config files
merged in, the inline training loop, the table's data), so a run started here has the same run id
and record as the same run started from the shell::

    import ltbench
    records = ltbench.run(method="ce,wb", dataset="digits_lt", epochs=5, seed=[0, 1],
                          set={"stage2.epochs": 2}, results="results")
    rows = ltbench.table(dataset="digits_lt", results="results")       # a list of dicts
    print(ltbench.table(dataset="digits_lt", results="results", fmt="github"))

torch is imported when something trains, not when this module is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_common import (
    DEFAULT_BENCHMARK,
    DEFAULT_RESULTS,
    builtin_methods,
    check_device,
    check_writable,
    err,
    every_method,
    known_names,
    parse_seeds,
    split_names,
    stage1_spec,
)
from .errors import LtbenchError

if TYPE_CHECKING:
    from .engine import RunOptions
    from .specs import Override, RunSpec
    from .store import Store

Names = str | list[str] | tuple[str, ...] | None
Seeds = int | str | list[int] | tuple[int, ...] | None


@dataclass
class Selection:
    """What `ltbench run|sweep` and ``ltbench.run`` select: the command line's selectors merged with a
    config file (ltbench.config), defaults filled in."""

    methods: list[str]
    benchmarks: list[str]
    seeds: list[int]
    backbone: str | None = None
    recipe: str | None = None
    imbalance: float | None = None
    epochs: int | None = None
    sets: list[str | Override] = field(default_factory=list)  # the config's first, then --set
    renamed: dict[str, str] = field(default_factory=dict)  # origin "--epochs" -> "config NAME", ...

    def specs(self, store: Store, stage1: str | None = None, init_weights: Path | None = None,
              data_root: Path | None = None, split_root: Path | None = None) -> list[RunSpec]:
        """The runs, benchmark by benchmark, method by method, seed by seed (`ltbench run`'s order)."""
        from .config import relabel
        from .specs import resolve

        parent = stage1_spec(store, stage1)
        return [relabel(resolve(m, d, backbone=self.backbone, recipe=self.recipe, imbalance=self.imbalance,
                                epochs=self.epochs, sets=self.sets, seed=s, stage1_run=parent,
                                init_weights=init_weights, data_root=data_root, split_root=split_root), self.renamed)
                for d in self.benchmarks for m in self.methods for s in self.seeds]


def _names(value: Names, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return split_names(value, option)
    names = [str(v).strip() for v in value if str(v).strip()]
    if not names:
        raise LtbenchError(f"{option} {list(value)!r}: names nothing; leave it out for the default.")
    return names


def _seeds(value: Seeds) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_seeds(value)
    values = [value] if isinstance(value, int) else list(value)
    if not values or not all(type(v) is int for v in values):
        raise LtbenchError(f"seed {value!r}: expected an integer or a list of integers, e.g. seed=[0, 1, 2].")
    return values


def _sets(value: list[str] | tuple[str, ...] | dict[str, Any] | None) -> list[str]:
    """--set items: a list of "STAGE.KEY=VALUE" strings, or a dict {"STAGE.KEY": value} (a value is
    written as JSON, or as it is when a string, and parsed back as --set parses it)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    return list(value)


def make_selection(method: Names = None, dataset: Names = None, *, seed: Seeds = None, backbone: str | None = None,
           recipe: str | None = None, imbalance: float | None = None, epochs: int | None = None,
           sets: list[str] | dict[str, Any] | None = None, config: str | Path | None = None) -> Selection:
    """The selection of `ltbench run|sweep`: a config file's selectors and settings (if any), then the
    command line's (a given flag wins over the file, a --set over the file's value of its key), then the
    defaults (the built-in methods, digits_lt, seed 0)."""
    from .config import load_config, merged

    cfg = load_config(config) if config is not None else None
    flags = {"method": _names(method, "--method"), "dataset": _names(dataset, "--dataset"), "backbone": backbone,
             "recipe": recipe, "imbalance": imbalance, "seed": _seeds(seed), "epochs": epochs}
    chosen, renamed, from_file = merged(cfg, flags)
    names = chosen["method"]
    if names and "all" in names:  # --method all: every registered method (with any others named, once)
        names = list(dict.fromkeys(every_method() + [n for n in names if n != "all"]))
    return Selection(methods=names or builtin_methods(), benchmarks=chosen["dataset"] or [DEFAULT_BENCHMARK],
                     seeds=chosen["seed"] or [0], backbone=chosen["backbone"], recipe=chosen["recipe"],
                     imbalance=chosen["imbalance"], epochs=chosen["epochs"], sets=[*from_file, *_sets(sets)],
                     renamed=renamed)


# --- training in this process (`ltbench run`, launcher inline) ---------------------------------------

def train_inline(specs: list[RunSpec], store: Store, opts: RunOptions, force: bool) -> list[dict[str, Any]]:
    """Run the specs one after the other in this process (a decoupled method's stage-1 run first, once),
    with a header line per run and a result line on stderr; the records, stage-1 runs included, each once."""
    from rich.markup import escape

    from .engine import execute

    done = []
    users = stage1_users(specs)
    for i, spec in enumerate(specs, 1):
        parent = spec.parent_spec()
        if parent is not None and not store.run_dir(parent).is_done():  # it trains first, inside execute
            _header(f"run {i}/{len(specs)}, first", parent, store, False, f"stage 1 of {', '.join(users[parent.run_id])}")
        _header(f"run {i}/{len(specs)}", spec, store, force)
        result = execute(spec, store, opts, force=force)
        err.print(f"  {describe_result(result)} -> {escape(str(store.run_dir(spec).path))}", highlight=False)
        if parent is not None:  # the shared stage-1 run is a row of its own (e.g. CE + tuned WD)
            done.append(store.run_dir(parent).result())
        done.append(result)
    return list({r["run_id"]: r for r in done}.values())


def _header(what: str, spec: Any, store: Any, force: bool, role: str = "") -> None:
    from rich.markup import escape

    rd = store.run_dir(spec)
    state = "done, skipped" if rd.is_done() and not force else ("resuming" if rd.checkpoint_file.exists() else "new")
    role = f" ({role})" if role else ""
    err.print(f"[bold]{escape(what)}[/bold] {escape(spec.method)}{escape(role)} on {escape(spec.label())} "
              f"({escape(spec.backbone)}, recipe {escape(spec.recipe)}, seed {spec.seed}) id {spec.run_id}: {state}",
              highlight=False)


def stage1_users(specs: list[Any]) -> dict[str, list[str]]:
    """Stage-1 run id -> the methods among ``specs`` that build on it."""
    users: dict[str, list[str]] = {}
    for s in specs:
        if s.parent_id is not None and s.method not in users.setdefault(s.parent_id, []):
            users[s.parent_id].append(s.method)
    return users


def describe_result(result: dict[str, Any]) -> str:
    """One line: the test accuracy and how the reported weights were chosen."""
    return f"test top-1 {result['test']['top1']:.2f}  ({selection_text(result)})"


def selection_text(result: dict[str, Any]) -> str:
    """How a record's reported weights were chosen: "val class-mean 91.00; epoch 35 selected on val"."""
    sel, val = result["selected"], result["val"]["class_mean"]
    val_text = f"val class-mean {val:.2f}" if val is not None else "no validation set"
    how = f"epoch {sel['epoch']} selected on {sel['rule']}" if sel.get("epoch") is not None else \
        "post-hoc: no training of its own"
    return f"{val_text}; {how}"


# --- tables (`ltbench table`) ---------------------------------------------------------------------

def table_data(results: Path, benchmark: Names, method: Names, select: str = "val",
               reference: bool = False) -> dict[str, Any]:
    """The table (tables.build_table) of a store's finished runs, filtered; an error when no run matches."""
    from .store import Store
    from .tables import build_table, read_records

    if select not in ("val", "last"):
        raise LtbenchError(f"--select {select!r}: expected val or last.")
    benchmark_text = ",".join(_names(benchmark, "--dataset") or []) if benchmark is not None else None
    method_text = ",".join(_names(method, "--method") or []) if method is not None else None
    benchmark_names, method_names = known_names(benchmark_text, method_text)
    records = read_records(Store(results), benchmark_names, evals=True)  # `ltbench eval` records: rows of their own
    t = build_table(records.results, benchmarks=benchmark_names, methods=method_names, select=select, reference=reference)
    if not t["rows"]:
        asked = " and ".join(f"{o} {v}" for o, v in (("--dataset", benchmark_text), ("--method", method_text)) if v)
        raise LtbenchError(f"no finished runs in {results}{f' match {asked}' if asked else ''}"
                           + "".join(f" ({n})" for n in records.notes()) + "; run some with `ltbench run` first "
                           "(`ltbench status` lists the runs).")
    t["notes"] += records.notes(t)
    t["record_notes"] = records.notes(t)
    return t


def format_table(t: dict[str, Any], fmt: str) -> str:
    """What `ltbench table --format FMT` prints on stdout: the title (github, latex) and the table."""
    from .tables import FORMATS, render

    if fmt not in FORMATS:
        raise LtbenchError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    shown = {k: v for k, v in t.items() if k != "record_notes"}
    title = {"github": f"{t['title']}\n", "latex": f"% {t['title']}\n"}.get(fmt, "")
    return title + render(shown, fmt)


def table_rows(t: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per (row, column) cell of a table: method (the row), benchmark (the column label),
    many/medium/few/all (means over seeds), std and n of all, seeds, norm_ratio (max/min classifier
    norm), selected_on_test, and with reference=True paper and delta (of all)."""
    rows = []
    for name, cells in t["rows"].items():
        for col in t["columns"]:
            c = cells.get(col)
            if c is None:
                continue
            row = {"method": name, "benchmark": col, **{g: c[g]["mean"] for g in ("many", "medium", "few", "all")},
                   "std": c["all"]["std"], "n": c["all"]["n"], "seeds": c.get("seeds", []),
                   "norm_ratio": c.get("norm_ratio", {}).get("mean"), "selected_on_test": c.get("selected_on_test", False)}
            if t["reference"]:
                row.update(paper=c.get("paper", {}).get("all"), delta=c["all"].get("delta"))
            rows.append(row)
    return rows


# --- the API --------------------------------------------------------------------------------------

def run(method: Names = None, dataset: Names = None, *, imbalance: float | None = None, seed: Seeds = None,
        epochs: int | None = None, recipe: str | None = None, backbone: str | None = None,
        set: list[str] | dict[str, Any] | None = None, config: str | Path | None = None,  # noqa: A002
        results: str | Path = DEFAULT_RESULTS, data_root: str | Path | None = None, device: str = "auto",
        download: bool = True, force: bool = False, stage1: str | None = None, init_weights: str | Path | None = None,
        split_root: str | Path | None = None, keep_features: bool = True, compile: bool = False,  # noqa: A002
        test_every_epoch: bool = False, progress: bool | None = None) -> list[dict[str, Any]]:
    """Train and evaluate in this process, as `ltbench run` does (launcher inline), and return the
    records (result.json) of the runs asked for: one per (dataset, method, seed), in that order. A
    decoupled method's stage-1 run is trained too and kept in ``results`` (its record is the parent of
    the stage-2 record: ``record["method_record"]["parent"]``; ``table()`` shows it as a row).

    ``method``/``dataset``: a name, "a,b" or a list (default: the built-in methods on digits_lt);
    ``seed``: an int, "0,1" or a list; ``set``: ["STAGE.KEY=VALUE", ...] or {"STAGE.KEY": value};
    ``config``: a config file or a shipped config's name (ltbench.config); ``progress``: rich bars
    (None: when stderr is a terminal). Raises LtbenchError for anything a user can get wrong, before
    anything is written."""
    from .engine import RunOptions
    from .store import Store

    sel = make_selection(method, dataset, seed=seed, backbone=backbone, recipe=recipe, imbalance=imbalance, epochs=epochs,
                 sets=set, config=config)
    store = Store(Path(results))
    init = Path(init_weights) if init_weights is not None else None
    opts = RunOptions(device=device, download=download, split_root=Path(split_root) if split_root else None,
                      init_weights=init, keep_features=keep_features, compile=compile,
                      test_every_epoch=test_every_epoch, live_progress=progress)
    if data_root is not None:
        opts.data_root = Path(data_root)
    specs = sel.specs(store, stage1, init, opts.data_root, opts.split_root)
    check_device(device, "inline")
    check_writable(Path(results))
    done = {r["run_id"]: r for r in train_inline(specs, store, opts, force)}
    return [done[s.run_id] for s in specs]


def table(dataset: Names = None, method: Names = None, *, select: str = "val", reference: bool = False,
          results: str | Path = DEFAULT_RESULTS, fmt: str | None = None) -> list[dict[str, Any]] | str:
    """The comparison table of the finished runs in ``results``, as `ltbench table` builds it.

    Without ``fmt``: a list of dicts, one per cell (``table_rows``: method, benchmark, many, medium,
    few, all, std, n, seeds, norm_ratio, selected_on_test; paper and delta with ``reference``). With
    ``fmt`` ("github", "latex", "csv" or "json"): the text that `ltbench table --format FMT` prints."""
    t = table_data(Path(results), dataset, method, select, reference)
    return table_rows(t) if fmt is None else format_table(t, fmt)
