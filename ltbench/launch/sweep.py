"""Sweeps: selectors x --grid x --seeds expanded into run specs, and the plan of what to launch.

A run's state comes from the store (DONE, a live lock, FAILED, a checkpoint) and, for runs launched
before, from the scheduler's view of their newest job (the manifest, ltbench.launch.dispatch.Manifest):

  done        DONE is written                                    skipped
  running     its lock is live (a process trains it)             skipped
  queued      its job is not over but has not begun the run      skipped
              (SLURM pending, or earlier runs of its local lane)
  failed      FAILED, or its job failed before any checkpoint    skipped unless --retry-failed
  pruned      PRUNED: an `ltbench tune` trial stopped it early    launched (trains on from its checkpoint)
  damaged     a file of its record cannot be read (the note      skipped
              names it and the fix)
  unfinished  a run directory without DONE                       launched (resumes from its checkpoint)
  new         nothing yet                                        launched

A stage-2 run waits for its stage-1 run: launched with it (SLURM afterok, or the same local lane),
after its queued SLURM job, or not at all while that run is failed ("blocked") or running elsewhere
("deferred": sweep again when it is done). A stage-1 run shared by several stage-2 runs is one run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DamagedRecord, LtbenchError
from ..results.store import RunDir, Store, read_json
from ..spec.run_spec import RunSpec, resolve
from .dispatch import Manifest, is_active, job_failed, job_states
from .jobstate import job_error

STATES = ("done", "running", "queued", "failed", "pruned", "damaged", "unfinished", "new")


def split_values(text: str) -> list[str]:
    """Comma-separated values, keeping commas inside brackets: '[0.5,0.8],[0.8,0.9]' is two values."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """--grid stage.key=v1,v2 (repeatable) -> [("stage.key", ["v1", "v2"]), ...]."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, eq, rhs = item.partition("=")
        key = key.strip()
        values = split_values(rhs) if eq else []
        if not key or key.startswith(".") or key.endswith(".") or not values or "" in values:
            raise LtbenchError(f"--grid {item!r}: expected stage.key=v1,v2,... (e.g. --grid "
                               "train.lr=0.05,0.1 or --grid stage1.weight_decay=1e-3,5e-3).")
        if key in [k for k, _ in axes]:
            raise LtbenchError(f"--grid {key}: given twice; list all its values in one --grid.")
        axes.append((key, list(dict.fromkeys(values))))
    return axes


def _keys(spec: RunSpec, own_stage1: bool) -> set[str]:
    """The stage.key names that --set/--grid can address for this spec."""
    keys = {f"{st}.{k}" for st, hp in spec.stages.items() for k in hp}
    if spec.parent is not None and own_stage1:
        keys |= {f"stage1.{k}" for k in spec.parent["stages"]["train"]} | {f"data.{k}" for k in spec.data}
    elif spec.parent is None:
        keys |= {f"data.{k}" for k in spec.data}
    return keys


def _addresses(key: str, keys: set[str]) -> bool:
    return key in keys if "." in key else any(k.endswith(f".{key}") for k in keys)


@dataclass
class Point:
    """One run of a sweep, with the grid values that made it (empty for added stage-1 runs)."""

    spec: RunSpec
    grid: dict[str, str] = field(default_factory=dict)


def expand(methods: list[str], benchmarks: list[str], seeds: list[int], grid: list[str], *, sets: list[str],
           backbone: str | None = None, recipe: str | None = None, imbalance: float | None = None,
           epochs: int | None = None, stage1_run: dict[str, Any] | None = None,
           init_weights: Path | None = None, data_root: Path | None = None,
           split_root: Path | None = None) -> list[Point]:
    """Every (benchmark, method, grid point, seed), resolved like `ltbench run` resolves its selectors,
    deduplicated by run id, each stage-1 run listed (once) before the first run on it. A grid key
    applies to the methods that have it (the others run once per seed); a key that no method has is
    an error, as is a value of the wrong type."""
    axes = parse_grid(grid)

    def spec_for(m: str, d: str, extra: list[str], seed: int) -> RunSpec:
        return resolve(m, d, backbone=backbone, recipe=recipe, imbalance=imbalance, epochs=epochs,
                       sets=[*sets, *extra], seed=seed, stage1_run=stage1_run, init_weights=init_weights,
                       data_root=data_root, split_root=split_root)

    bases = {(m, d): spec_for(m, d, [], seeds[0]) for d in benchmarks for m in methods}  # --set errors first
    known = {(m, d): _keys(b, stage1_run is None) for (m, d), b in bases.items()}
    for key, values in axes:
        if not any(_addresses(key, ks) for ks in known.values()):
            names = sorted(set().union(*known.values()))
            raise LtbenchError(f"--grid {key}={','.join(values)}: no stage of {', '.join(methods)} on "
                               f"{', '.join(benchmarks)} has a key {key!r}. Known keys: {', '.join(names)}.")
    points: dict[str, Point] = {}
    for d in benchmarks:
        for m in methods:
            mine = [(k, vs) for k, vs in axes if _addresses(k, known[(m, d)])]
            for combo in itertools.product(*[vs for _, vs in mine]):
                values = {k: v for (k, _), v in zip(mine, combo, strict=True)}
                for seed in seeds:
                    try:
                        spec = spec_for(m, d, [f"{k}={v}" for k, v in values.items()], seed)
                    except LtbenchError as exc:  # the base resolved, so a grid value is at fault
                        raise LtbenchError(str(exc).replace("--set ", "--grid ", 1)) from None
                    if spec.parent is not None:
                        parent = spec.parent_spec()
                        stage1 = {k: v for k, v in values.items() if k.startswith(("stage1.", "data."))}
                        points.setdefault(parent.run_id, Point(parent, stage1))
                    points.setdefault(spec.run_id, Point(spec, values))
    return list(points.values())


@dataclass
class Row:
    """A run of the plan: its state, what this launch does with it, and why."""

    point: Point
    state: str
    action: str  # launch | skip | blocked | deferred
    after_run: str | None = None  # stage 2: its stage-1 run, launched in this launch too
    after_job: str | None = None  # stage 2: the queued SLURM job of its stage-1 run
    job: dict[str, Any] | None = None  # its newest job (manifest)
    job_state: str | None = None
    note: str = ""


@dataclass
class Plan:
    rows: list[Row]

    @property
    def to_launch(self) -> list[RunSpec]:
        return [r.point.spec for r in self.rows if r.action == "launch"]

    def after_jobs(self) -> dict[str, str]:
        """Run id -> the already queued SLURM job it must wait for."""
        return {r.point.spec.run_id: r.after_job for r in self.rows if r.action == "launch" and r.after_job}

    def summary(self) -> str:
        n = Counter(r.state for r in self.rows)
        acts = Counter(r.action for r in self.rows)
        parts = [f"{n[s]} {s}" for s in STATES if n[s]]
        extra = [f"{acts[a]} {a}" for a in ("blocked", "deferred") if acts[a]]
        return (f"{len(self.rows)} runs: {', '.join(parts) or 'none'} -> {acts['launch']} to launch"
                + (f" ({', '.join(extra)})" if extra else ""))


def run_state(rd: RunDir, job: dict[str, Any] | None, job_state: str | None) -> tuple[str, str]:
    """(state, note) of a run from the store and its newest job. A damaged run's note names the file,
    what is wrong with it and the fix ("result.json is not JSON: ...")."""
    damaged = rd.record_damage()
    if damaged is not None:
        return "damaged", _damage_note(damaged)
    if rd.is_done():
        try:
            rd.metrics()
        except DamagedRecord as exc:  # only the per-epoch log: the table and plots read result.json
            return "done", f"{exc.path.name} {exc.problem} (per-epoch log only)"
        return "done", ""
    if rd.lock_is_live():
        return "running", ""
    if job is not None and is_active(job_state):
        return "queued", ""  # its job is pending, starting, or busy with the runs before it in its lane
    if rd.pruned_file.exists() and not rd.failed_file.exists():
        return "pruned", _pruned_note(rd)
    if rd.failed_file.exists():
        try:
            error = rd.failure().strip().splitlines()
        except DamagedRecord as exc:  # the fix goes with the error's lines (`ltbench status`)
            return "failed", f"{exc.path.name} {exc.problem}"
        return "failed", (error or [""])[-1]
    if job is not None and job.get("job_id") is not None and not rd.checkpoint_file.exists() \
            and job_failed(job, job_state):
        line = job_error(job, rd.run_id)
        return "failed", f"job {job['job_id']} {job_state or 'failed'}" + (f": {line}" if line else "")
    if not rd.path.exists():
        return "new", ""
    try:
        rd.metrics()
    except DamagedRecord as exc:
        return "damaged", _damage_note(exc)
    return "unfinished", ""


def _pruned_note(rd: RunDir) -> str:
    """Which study and trial pruned the run, after which epoch (from PRUNED; "" when it cannot be read)."""
    info, _ = read_json(rd.pruned_file)
    if not isinstance(info, dict):
        return ""
    return f"by study {info.get('study')}, trial {info.get('trial')}, after epoch {info.get('epoch')}"


def _damage_note(exc: DamagedRecord) -> str:
    return f"{exc.path.name} {exc.problem}: {exc.fix}"


def make_plan(points: list[Point], store: Store, manifest: Manifest, launcher: str,
              retry_failed: bool = False) -> Plan:
    """The state of every point and what launching with ``launcher`` does with it (module docstring)."""
    jobs = manifest.latest_jobs()
    states = job_states([jobs[p.spec.run_id] for p in points if p.spec.run_id in jobs])
    rows: dict[str, Row] = {}
    for p in points:  # stage-1 runs come before the runs on them
        rid = p.spec.run_id
        job = jobs.get(rid)
        jstate = states.get(str(job["job_id"])) if job else None
        state, note = run_state(store.run_dir(p.spec), job, jstate)
        launch = state in ("unfinished", "new", "pruned") or (state == "failed" and retry_failed)
        row = Row(p, state, "launch" if launch else "skip", job=job, job_state=jstate, note=note)
        parent = rows.get(p.spec.parent_id) if p.spec.parent else None
        if launch and parent is not None and parent.state != "done":
            pid = parent.point.spec.run_id
            if parent.action == "launch":
                row.after_run = pid
            elif parent.state == "failed":
                row.action = "blocked"
                row.note = f"its stage-1 run {pid} failed (--retry-failed relaunches it)"
            elif launcher == "slurm" and parent.job and parent.job.get("launcher") == "slurm" \
                    and is_active(parent.job_state):
                row.after_job = str(parent.job["job_id"])
            else:
                row.action = "deferred"
                row.note = f"waits for its stage-1 run {pid[:8]} ({parent.state}); sweep again"
        rows[rid] = row
    return Plan(list(rows.values()))


def render(plan: Plan, limit: int = 200) -> str:
    from tabulate import tabulate

    shown = plan.rows if len(plan.rows) <= limit else [r for r in plan.rows if r.action != "skip"][:limit]
    def action(r: Row) -> str:
        if r.after_run:
            return f"{r.action} after stage-1 run {r.after_run[:8]}"
        return f"{r.action} after job {r.after_job}" if r.after_job else r.action

    table = [[r.point.spec.run_id, r.point.spec.method, r.point.spec.label(), r.point.spec.seed,
              " ".join(f"{k}={v}" for k, v in r.point.grid.items()), r.state, action(r), r.note[:80]]
             for r in shown]
    text = tabulate(table, headers=["run", "method", "benchmark", "seed", "grid", "state", "action", "note"])
    if len(shown) < len(plan.rows):
        text += f"\n({len(plan.rows) - len(shown)} more runs not shown)"
    return text + "\n" + plan.summary()
