"""`ltbench sweep`, `ltbench status`, and the launching side of `ltbench run --launcher local|slurm`
(ltbench.launch.sweep plans, ltbench.launch.dispatch launches). torch is imported only when something is launched."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import DamagedRecord, LtbenchError
from .common import (
    DEFAULT_RESULTS,
    Account,
    ArrayParallelism,
    BackboneSel,
    Compile,
    ConfigFile,
    Constraint,
    Cpus,
    DataRoot,
    DatasetSel,
    Device,
    Download,
    Epochs,
    Gpus,
    ImbalanceSel,
    InitWeights,
    JobsPerGpu,
    KeepFeatures,
    Launcher,
    Log,
    MaxJobs,
    Mem,
    MethodSel,
    Nodes,
    Partition,
    Qos,
    RecipeSel,
    Results,
    Sbatch,
    SeedSel,
    Sets,
    Setup,
    SplitRoot,
    Stage1,
    SyncBn,
    TasksPerNode,
    TestEveryEpoch,
    TimeLimit,
    err,
    request_from_options,
    stray_words,
    user_errors,
)

if TYPE_CHECKING:
    from ..engine.training import RunOptions
    from ..launch.dispatch import Launched, LaunchOptions
    from ..launch.sweep import Plan, Point
    from ..results.store import RunDir, Store
    from ..spec.run_spec import RunSpec


@user_errors
def sweep(
    ctx: typer.Context, method: MethodSel = None, benchmark: DatasetSel = None, backbone: BackboneSel = None,
    imbalance: ImbalanceSel = None, recipe: RecipeSel = None, set_: Sets = [],  # noqa: B006 (typer copies it)
    grid: list[str] = typer.Option([], "--grid", metavar="STAGE.KEY=V1,V2,..", help="one run per combination "
                                   "(repeatable), e.g. stage1.weight_decay=1e-3,5e-3"),
    seeds: SeedSel = None,
    epochs: Epochs = None, config: ConfigFile = None,
    data_root: DataRoot = Path("data"), results: Results = DEFAULT_RESULTS, device: Device = "auto",
    download: Download = True,
    stage1: Stage1 = None, split_root: SplitRoot = None, init_weights: InitWeights = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan; launch nothing"),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="launch failed runs again (they resume from their checkpoint)"),
    sync_bn: SyncBn = False, compile_: Compile = False, keep_features: KeepFeatures = True,
    test_every_epoch: TestEveryEpoch = False, log: Log = None, launcher: Launcher = "local",
    max_jobs: MaxJobs = None, jobs_per_gpu: JobsPerGpu = None, time_min: TimeLimit = None, gpus: Gpus = None, nodes: Nodes = 1,
    tasks_per_node: TasksPerNode = None, cpus: Cpus = None, mem_gb: Mem = None, partition: Partition = None,
    account: Account = None, qos: Qos = None, constraint: Constraint = None,
    array_parallelism: ArrayParallelism = None, sbatch: Sbatch = "", setup: Setup = None
) -> None:
    """Launch a sweep: selectors x --grid x --seeds. Shows which runs are done, running, queued, failed
    or missing, launches only what is missing (unfinished runs resume) and returns without waiting;
    `ltbench status --sweep latest` follows it. Stage-2 runs wait for their (shared) stage-1 run."""
    from ..launch.dispatch import Manifest
    from ..launch.sweep import make_plan, render
    from ..results.store import Store

    stray_words(ctx.args, "sweep")
    request = request_from_options(locals(), dataset=benchmark, seed=seeds, sets=set_, compile=compile_)
    launch_opts = request.launch_options()
    store = Store(results)
    points = request.points(store)
    request.check([p.spec for p in points], launch_opts.launcher, dry_run)  # also for a dry run: what a job would refuse
    plan = make_plan(points, store, Manifest(results), launch_opts.launcher, retry_failed)
    print(render(plan))
    if dry_run:
        print("dry run: nothing launched.")
        return
    launched, sweep_id = _launch_recorded(plan, points, store, request.run_options(), launch_opts)
    jobs = [str(x.entry["job_id"]) for x in launched if x.entry["job_id"] is not None]
    what = f"in {len(jobs)} {launch_opts.launcher} jobs ({_short(jobs)})" if jobs else launch_opts.launcher
    n = sum(len(x.run_ids) for x in launched)
    print(f"sweep {sweep_id}: " + (f"launched {n} runs {what}." if n else "nothing to launch.")
          + f" Follow it with: ltbench status --results {results} --sweep latest")


def _short(ids: list[str], n: int = 6) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _launch_recorded(plan: Plan, points: list[Point], store: Store, opts: RunOptions,
                     lo: LaunchOptions) -> tuple[list[Launched], str]:
    """Launch the plan's runs and record the sweep and its jobs in the manifest (also the jobs
    submitted before a submission failed halfway)."""
    from ..launch.dispatch import Manifest, command_line, launch

    def record() -> str:
        return Manifest(store.root).record(command_line(), lo.launcher, [p.spec for p in points], launched)

    launched: list[Launched] = []
    try:
        for x in launch(plan.to_launch, plan.after_jobs(), store, opts, lo):
            launched.append(x)
    except BaseException:
        if launched:
            record()
        raise
    return launched, record()


def launch_and_wait(specs: list[RunSpec], store: Store, opts: RunOptions, lo: LaunchOptions,
                    force: bool) -> list[dict[str, Any]]:
    """`ltbench run --launcher local|slurm`: launch the runs that are not done (all of them with
    --force), wait for the jobs, and return the records, stage-1 runs included."""
    from ..launch.dispatch import Manifest, wait
    from ..launch.sweep import Point, make_plan, render

    points: dict[str, Point] = {}
    for s in specs:  # each stage-1 run once, before the runs on it
        parent = s.parent_spec()
        if parent is not None:
            points.setdefault(parent.run_id, Point(parent))
        points.setdefault(s.run_id, Point(s))
    if force:
        for s in specs:
            rd = store.run_dir(s)
            if rd.lock_is_live():
                raise LtbenchError(f"run {rd.run_id} is running right now; --force cannot replace it.")
            store.remove(rd)
    plan = make_plan(list(points.values()), store, Manifest(store.root), lo.launcher)
    err.print(render(plan), highlight=False, markup=False)
    launched, _ = _launch_recorded(plan, list(points.values()), store, opts, lo)
    if launched:
        err.print(f"waiting for {len(launched)} {lo.launcher} jobs ...", highlight=False)
        try:
            wait(launched)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted: the {lo.launcher} jobs go on without this command; "
                                    f"`ltbench status --results {store.root}` follows them, and the same "
                                    "command waits for them again.") from None
    records, missing = [], []
    for p in points.values():
        rd = store.run_dir(p.spec)
        if rd.is_done():
            records.append(rd.result())
        else:
            missing.append(p.spec.run_id)
    if missing:
        raise LtbenchError(f"{len(missing)} of {len(points)} runs did not finish ({_short(missing)}); "
                           f"`ltbench status --results {store.root}` shows why.")
    return records


def show_status(results: Path, which: str, where: list[str] | None = None, wide: bool = False) -> None:
    """The `ltbench status` table: every run of the store and the manifest (or of one sweep). A damaged
    record is a row of its own (state damaged) and a line below the table that names the file and the fix."""
    from ..launch.dispatch import Manifest, job_states
    from ..launch.sweep import STATES, run_state
    from ..results.store import RunDir, Store

    store, manifest = Store(results), Manifest(results)
    data = manifest.load()
    dirs = {rd.run_id: rd for rd in store.runs()}
    if which == "all":
        ids = list(dirs) + [rid for rid in data["runs"] if rid not in dirs]
    else:
        sw = _find_sweep(data["sweeps"], which, results)
        ids = sw["runs"]
        print(f"sweep {sw['id']} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(sw['time']))}, "
              f"{sw['launcher']}): {sw['command']}")
    if not ids:
        print(f"no runs in {results}")
        return
    jobs = manifest.latest_jobs(data)
    states = job_states([jobs[r] for r in ids if r in jobs])
    specs = _readable_specs(dirs)
    ids = _where(ids, specs, where, results)
    settings, roles = _settings_and_roles(specs, ids)
    rows, counts, failures, damaged = [], Counter(), [], []
    for rid in ids:
        info = data["runs"].get(rid, {})
        rd = dirs.get(rid) or RunDir(Path(results) / "runs" / info["benchmark"] / info["method"] / rid)
        spec = specs.get(rid)
        job = jobs.get(rid)
        jstate = states.get(str(job["job_id"])) if job and job.get("job_id") is not None else None
        state, note = run_state(rd, job, jstate)
        counts[state] += 1
        epochs = sum(hp.get("epochs", 0) for hp in spec["stages"].values()) if spec else info.get("epochs")
        top1 = f"{rd.result()['test']['top1']:.2f}" if state == "done" else ""
        where = f"{job['launcher']} {job['job_id']}" + (f" {jstate}" if jstate else "") \
            if job and job.get("job_id") is not None else ""
        meta = {"benchmark": rd.path.parent.parent.name, "method": rd.path.parent.name, "seed": "?", **info,
                **(spec or {})}
        if state == "done" and not note:
            note = _stage1_gone(spec, dirs, results)
        if state == "damaged":
            damaged.append((rid, meta, note))
            note = f"{note.partition(': ')[0]} (see below)"
        rows.append([rid, meta["benchmark"], meta["method"], roles.get(rid, ""), settings.get(rid, ""), meta["seed"],
                     state, _epochs_column(rd, epochs), top1, where, note[:70]])
        if state == "failed":
            failures.append((rid, meta, _error_line(rd, job) or note or "(no error recorded)"))
    _print_status(rows, ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]), failures, damaged, wide)
    if which == "all":  # the studies of `ltbench tune`: progress and best trial (none: nothing printed)
        from ..tune.study import status_lines

        for line in status_lines(results):
            print(line)


STATUS_HEADERS = ["run", "benchmark", "method", "role", "settings", "seed", "state", "epochs", "test top-1", "job",
                  "note"]
NARROW = (0, 1, 2, 5, 6, 7, 8)  # the columns of a row where the table is too wide; role, settings, job and note: under it


def _print_status(rows: list[list[Any]], counts: str, failures: list[tuple[str, dict[str, Any], str]],
                  damaged: list[tuple[str, dict[str, Any], str]], wide: bool) -> None:
    """The status table, as wide as the terminal allows (``wide``: one line a run however long), the
    counts, then a paragraph for each failed and damaged run (wrapped at spaces: a path stays whole)."""
    from .columns import fit_table, output_width, wrap, wraps

    width = 10**6 if wide else output_width()
    table = fit_table(rows, STATUS_HEADERS, width)
    if wraps(table, rows):
        details = ["; ".join(str(r[i]) for i in (3, 4, 9, 10) if r[i]) for r in rows]
        headers = [STATUS_HEADERS[i] if i != 8 else "top-1" for i in NARROW]
        table = fit_table([[r[i] for i in NARROW] for r in rows], headers, width, details=details)
    print(table)
    print(counts)
    for kind, notes in (("failed", failures), ("damaged", damaged)):
        for rid, meta, text in notes:  # never a traceback
            head = f"{kind}: {rid} ({meta['method']} on {meta['benchmark']}, seed {meta['seed']}): "
            print("\n" + "\n".join(wrap(head + text, width, indent="  ")))


def _where(ids: list[str], specs: dict[str, dict[str, Any]], where: list[str] | None, results: Path) -> list[str]:
    """The runs whose spec meets every --where (a run whose spec cannot be read meets none); none is an error."""
    from ..results.where import check_keys, matches, parse_where

    conditions = parse_where(where)
    if not conditions:
        return ids
    check_keys(conditions, [specs[r] for r in ids if r in specs])
    kept = [r for r in ids if r in specs and matches(specs[r], conditions)]
    if not kept:
        raise LtbenchError(f"no run in {results} has {' and '.join(c[2] for c in conditions)}; `ltbench status` "
                           "without --where lists them all.")
    return kept


def _readable_specs(dirs: dict[str, RunDir]) -> dict[str, dict[str, Any]]:
    """Run id -> its spec.json, for the runs whose spec.json reads (run_state reports the others)."""
    specs = {}
    for rid, rd in dirs.items():
        try:
            specs[rid] = rd.spec()
        except DamagedRecord:
            pass
    return specs


def _epochs_column(rd: RunDir, epochs: int | None) -> str:
    if epochs is None:  # neither spec.json nor the manifest says
        return "?"
    if not epochs:
        return "post-hoc"
    try:
        return f"{len(rd.metrics())}/{epochs}"
    except DamagedRecord:  # a damaged line: the note says which
        return f"?/{epochs}"


def _stage1_gone(spec: dict[str, Any] | None, dirs: dict[str, RunDir], results: Path) -> str:
    """A note for a finished stage-2 run whose stage-1 run directory is gone ("" otherwise)."""
    from ..spec.run_spec import RunSpec

    if not spec or not spec.get("parent"):
        return ""
    parent = RunSpec.from_json(spec["parent"]).run_id
    return "" if parent in dirs else f"its stage-1 run {parent} is no longer in {results}"


def _settings_and_roles(specs: dict[str, dict[str, Any]], ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Per run id: its settings that are not its method's defaults (what tells runs of one method
    apart), and its role when other runs build on it ("stage 1 of wb, crt")."""
    from ..spec.run_spec import RunSpec, format_settings, non_defaults

    users: dict[str, set[str]] = {}
    for spec in specs.values():
        if spec.get("parent") is not None:
            users.setdefault(RunSpec.from_json(spec["parent"]).run_id, set()).add(spec["method"])
    settings = {rid: format_settings(non_defaults(specs[rid])) for rid in ids if rid in specs}
    return settings, {pid: f"stage 1 of {', '.join(sorted(ms))}" for pid, ms in users.items()}


def _find_sweep(sweeps: list[dict[str, Any]], which: str, results: Path) -> dict[str, Any]:
    if not sweeps:
        raise LtbenchError(f"--sweep {which}: no sweep was launched into {results} (`ltbench sweep`).")
    if which == "latest":
        return sweeps[-1]
    hits = [s for s in sweeps if s["id"].startswith(which)]
    if len(hits) != 1:
        raise LtbenchError(f"--sweep {which}: {'no' if not hits else len(hits)} sweeps match; the sweeps of "
                           f"{results} are {', '.join(s['id'] for s in sweeps[-5:])} (latest last).")
    return hits[0]


def _error_line(rd: RunDir, job: dict[str, Any] | None) -> str | None:
    """The last line of a failed run's error (never a traceback): its FAILED record's, else what its
    job's error log says about it (jobstate.job_error); None where neither tells."""
    from ..launch.jobstate import job_error

    if rd.failed_file.exists():
        try:
            lines = [ln.strip() for ln in rd.failure().splitlines() if ln.strip()]
        except DamagedRecord as exc:  # the error is lost: say so, and how to go on
            return f"{exc.path.name} {exc.problem}: {exc.fix}"
        if lines:
            return lines[-1]
    if job and job.get("job_id") is not None:
        return job_error(job, rd.run_id)
    return None
