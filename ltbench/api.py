"""The Python API, for notebooks and scripts: ``ltbench.run``, ``ltbench.table`` and ``ltbench.plot``.

They take the command line's names and defaults and go through the code that `ltbench run` and
`ltbench table` use (this module holds that shared code: the selection of runs, config files
merged in, the inline training loop, the table's data), so a run started here has the same run id
and record as the same run started from the shell::

    import ltbench
    records = ltbench.run(method="ce,wb", dataset="digits_lt", epochs=5, seed=[0, 1],
                          set={"stage2.epochs": 2}, results="results")
    rows = ltbench.table(dataset="digits_lt", results="results")       # a list of dicts
    print(ltbench.table(dataset="digits_lt", results="results", fmt="github"))
    fig = ltbench.plot("norms", [r["run_id"] for r in records], results="results")  # a matplotlib Figure

torch is imported when something trains, not when this module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli.common import err
from .cli.show import describe_result, stage1_users
from .errors import LtbenchError
from .results.store import Store
from .spec.request import DEFAULT_RESULTS, Names, RunRequest, Seeds, _names, known_names

if TYPE_CHECKING:
    from .engine.training import RunOptions
    from .spec.run_spec import RunSpec


def execute_request(request: RunRequest, dry_run: bool = False) -> tuple[list[RunSpec], list[dict[str, Any]]]:
    """`ltbench run` and ``ltbench.run``: plan the request's runs, check everything a run would refuse
    (also for a dry run, which then prints the plan and returns nothing), then train them in this
    process or as jobs; the specs asked for, and the records (stage-1 runs included, each once)."""
    from .results.store import Store

    store = Store(request.results)
    specs = request.specs(store)
    launcher = request.launch_options().launcher
    request.check(specs, launcher, dry_run)
    if dry_run:
        from .cli.show import dry_run_text

        print(dry_run_text(specs, store, request.force))
        return specs, []
    opts = request.run_options()
    if launcher == "inline":
        done = train_inline(specs, store, opts, request.force)
    else:
        from .cli.sweep import launch_and_wait

        done = launch_and_wait(specs, store, opts, request.launch_options(), request.force)
    return specs, list({r["run_id"]: r for r in done}.values())


# --- training in this process (`ltbench run`, launcher inline) ---------------------------------------

def train_inline(specs: list[RunSpec], store: Store, opts: RunOptions, force: bool) -> list[dict[str, Any]]:
    """Run the specs one after the other in this process (a decoupled method's stage-1 run first, once),
    with a header line per run and a result line on stderr; the records, stage-1 runs included, each once."""
    from rich.markup import escape

    from .engine.training import execute

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


# --- tables (`ltbench table`) ---------------------------------------------------------------------

def table_data(results: Path, benchmark: Names, method: Names, select: str = "val",
               reference: bool = False, where: list[str] | None = None, *, evals: bool = False,
               mix_protocols: bool = False) -> dict[str, Any]:
    """The table (tables.build_table) of a store's finished runs, filtered (``where``: --where KEY=VALUE
    items, ltbench.results.where); with ``evals`` the table of its `ltbench eval` records instead (they
    never join the runs' table); an error when nothing matches."""
    from .results import where as where_
    from .results.store import Store
    from .results.tables import build_table, is_eval, read_records
    from .tune.rows import with_tuned_rows

    if select not in ("val", "last"):
        raise LtbenchError(f"--select {select!r}: expected val or last.")
    benchmark_text = ",".join(_names(benchmark, "--dataset") or []) if benchmark is not None else None
    method_text = ",".join(_names(method, "--method") or []) if method is not None else None
    benchmark_names, method_names = known_names(benchmark_text, method_text)
    records = read_records(Store(results), benchmark_names, evals=True)
    records.results = where_.select(records.results, where_.parse_where(where))
    records.results, tune_notes = with_tuned_rows(records.results, Path(results), select)  # `ltbench tune`'s rows
    chosen = [r for r in records.results if is_eval(r) == evals]
    others = [r for r in records.results if is_eval(r) != evals and (not method_names or r["method"] in method_names)]
    t = build_table(chosen, benchmarks=benchmark_names, methods=method_names, select=select, reference=reference,
                    mix_protocols=mix_protocols) if chosen or reference else {"rows": {}}  # empty: no registry, no torch
    elsewhere = (f"{len(others)} `ltbench eval` record{'s' if len(others) > 1 else ''} match too: `ltbench table "
                 "--evals` shows them, in a table of their own" if not evals else
                 f"{len(others)} finished run{'s' if len(others) > 1 else ''} match: `ltbench table` (without --evals) "
                 "shows them") if others else ""
    if not t["rows"]:
        asked = " and ".join(f"{o} {v}" for o, v in (("--dataset", benchmark_text), ("--method", method_text),
                                                      *(("--where", w) for w in where or [])) if v)
        what = "`ltbench eval` records" if evals else "finished runs"
        how = "evaluate a run with `ltbench eval RUN --dataset ...` first" if evals else \
            "run some with `ltbench run` first (`ltbench status` lists the runs)"
        raise LtbenchError(f"no {what} in {results}{f' match {asked}' if asked else ''}"
                           + "".join(f" ({n})" for n in records.notes() + [elsewhere] if n) + f"; {how}.")
    if evals:
        t["title"] = t["title"].replace("test top-1 (%)", "`ltbench eval` top-1 (%) of trained models", 1)
    t["notes"] += records.notes(t) + ([elsewhere] if elsewhere else []) + (tune_notes if not evals else [])
    t["record_notes"] = records.notes(t) + ([elsewhere] if elsewhere else [])
    return t


def format_table(t: dict[str, Any], fmt: str) -> str:
    """What `ltbench table --format FMT` prints on stdout: the title (github, latex) and the table."""
    from .results.tables import FORMATS, render

    if fmt not in FORMATS:
        raise LtbenchError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    shown = {k: v for k, v in t.items() if k != "record_notes"}
    title = {"github": f"{t['title']}\n", "markdown": f"{t['title']}\n\n", "latex": f"% {t['title']}\n"}.get(fmt, "")
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
        test_every_epoch: bool = False, sync_bn: bool = False, log: str | None = None, progress: bool | None = None,
        dry_run: bool = False, launcher: str = "inline", **launch: Any) -> list[dict[str, Any]]:
    """Train and evaluate as `ltbench run` does, with every option it has, and return the records
    (result.json) of the runs asked for: one per (dataset, method, seed), in that order. A decoupled
    method's stage-1 run is trained too and kept in ``results`` (its record is the parent of the stage-2
    record: ``record["method_record"]["parent"]``; ``table()`` shows it as a row).

    ``method``/``dataset``: a name, "a,b" or a list (default: the built-in methods on digits_lt);
    ``seed``: an int, "0,1" or a list; ``set``: ["STAGE.KEY=VALUE", ...] or {"STAGE.KEY": value};
    ``config``: a config file or a shipped config's name (ltbench.spec.config); ``progress``: bars (None: in a
    notebook with ipywidgets, or when stderr is a terminal; False: a log line per epoch); ``dry_run``: print the plan, return []; ``launcher``: inline (this
    process), local or slurm, with the launch options of the command line as keywords (``max_jobs``,
    ``time_min``, ``gpus``, ``partition``, ...). Raises LtbenchError for anything a user can get wrong
    (a wrong type included), before anything is written."""
    kwargs = {k: v for k, v in locals().items() if k not in ("launch", "set", "dry_run")}
    kwargs.update(sets=set, **launch)
    request = RunRequest.from_api("ltbench.run", kwargs)
    if not isinstance(dry_run, bool):
        raise LtbenchError(f"ltbench.run(dry_run={dry_run!r}): expected True or False.")
    specs, records = execute_request(request, dry_run)
    done = {r["run_id"]: r for r in records}
    return [] if dry_run else [done[s.run_id] for s in specs]


def table(dataset: Names = None, method: Names = None, *, select: str = "val", reference: bool = False,
          results: str | Path = DEFAULT_RESULTS, fmt: str | None = None,
          where: list[str] | dict[str, Any] | None = None, evals: bool = False,
          mix_protocols: bool = False) -> list[dict[str, Any]] | str:
    """The comparison table of the finished runs in ``results``, as `ltbench table` builds it.

    Without ``fmt``: a list of dicts, one per cell (``table_rows``: method, benchmark, many, medium,
    few, all, std, n, seeds, norm_ratio, selected_on_test; paper and delta with ``reference``). With
    ``fmt`` ("github", "markdown", "latex", "csv", "csv-wide" or "json"): the text that `ltbench table
    --format FMT` prints.
    ``where``: ["KEY=VALUE", ...] or {"KEY": value}, as --where (e.g. {"train.epochs": 200}); ``evals``:
    the table of the `ltbench eval` records instead; ``mix_protocols``: choose on validation across
    epoch counts, recipes and backbones too (by default each is a row of its own)."""
    if isinstance(where, dict):
        import json

        where = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in where.items()]
    t = table_data(Path(results), dataset, method, select, reference, where, evals=evals,
                   mix_protocols=mix_protocols)
    return table_rows(t) if fmt is None else format_table(t, fmt)


def plot_records(kind: str, run_ids: list[str] | None, results: str | Path, benchmark: Names = None,
                 method: Names = None, where: list[str] | None = None) -> list[dict[str, Any]]:
    """The finished records that `ltbench plot KIND` draws: the runs named (ids or prefixes), or for
    ``wd`` every done run of the benchmarks and methods given; then --where. One LtbenchError for a run
    that is not finished or damaged, for none left, or for runs of several benchmarks (norms, accuracy)."""
    from rich.markup import escape

    from .results import where as where_
    from .results.tables import read_records

    store = Store(Path(results))
    if run_ids:
        dirs = [store.find(r) for r in run_ids]
        unfinished = [d.run_id for d in dirs if not d.is_done()]
        if unfinished:
            raise LtbenchError(f"run(s) {', '.join(unfinished)} are not finished; `ltbench status` shows them.")
        damaged = [str(p) for p in (d.record_damage() for d in dirs) if p is not None]
        if damaged:
            raise LtbenchError(" ".join(damaged))
        chosen = [d.result() for d in dirs]
    elif kind == "wd":
        benchmark_names, method_names = known_names(benchmark, method)
        records = read_records(store, benchmark_names)
        chosen = [r for r in records.results if not method_names or r["method"] in method_names]
        for d in [d for d in records.damaged if not method_names or d.path.parent.parent.name in method_names]:
            err.print(f"warning: left out as damaged: {escape(str(d))}", highlight=False, soft_wrap=True)
    else:
        raise LtbenchError(f"`ltbench plot {kind}` needs run ids (see `ltbench status`).")
    chosen = where_.select(chosen, where_.parse_where(where))
    if not chosen:
        raise LtbenchError(f"no finished runs in {results} match.")
    if kind not in ("wd", "confusion") and len({r["label"] for r in chosen}) > 1:  # confusion: one run
        raise LtbenchError(f"`ltbench plot {kind}` compares runs of one benchmark; these come from "
                           f"{', '.join(sorted({r['label'] for r in chosen}))}.")
    return chosen


def plot(kind: str, runs: Names = None, *, results: str | Path = DEFAULT_RESULTS, dataset: Names = None,
         method: Names = None, where: list[str] | dict[str, Any] | None = None,
         output: str | Path | None = None) -> Any:
    """The figure that `ltbench plot KIND` draws, as a matplotlib Figure: a notebook shows it as the
    cell's value (once: it is not left among pyplot's open figures), a script can ``fig.savefig(...)``.
    ``kind``: norms, accuracy, wd or confusion; ``runs``: run ids or prefixes (a list or "a,b"; wd:
    default every done run of ``dataset``/``method``); ``where`` as in ``table``; ``output``: also write
    the figure to this .png file."""
    from .results.plots import PLOTTERS, _save

    if kind not in PLOTTERS:
        raise LtbenchError(f"ltbench.plot({kind!r}): expected one of {', '.join(PLOTTERS)}.")
    if isinstance(where, dict):
        import json

        where = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in where.items()]
    run_ids = [r.strip() for r in runs.split(",") if r.strip()] if isinstance(runs, str) else list(runs or [])
    fig = PLOTTERS[kind](plot_records(kind, run_ids, results, dataset, method, where), None)
    if output is not None:
        _save(fig, Path(output))
    return fig
