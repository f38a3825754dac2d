"""What a run is before and after it runs: `ltbench run --dry-run` (every run a command would start,
its resolved settings with their origins, its id and state) and `ltbench show RUN_ID` (a record's
spec with origins, its result and its files). Both only read: nothing is started or written, and a
damaged file is its one-line message (errors.DamagedRecord), never a traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from ..errors import DamagedRecord, LtbenchError
from ..results.store import RunDir, Store
from ..spec.run_spec import RunSpec
from ..spec.schema import SINCE

WIDTH = 110  # settings lines wrap here
# Origins in the order in which later ones override earlier ones (how the settings lines are ordered).
ORIGIN_ORDER = ("engine", "benchmark", "stage-1 run", "recipe", "method", "--data-root", "--epochs", "--imbalance",
                "--backbone", "config", "--set")


def _origin_rank(origin: str) -> int:
    return next((i for i, o in enumerate(ORIGIN_ORDER) if origin.startswith(o)), len(ORIGIN_ORDER))


def settings_lines(spec: RunSpec, names: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> list[str]:
    """The spec's settings grouped by section (backbone, data, each stage) and origin, one line each:
    "    train     recipe paper:  epochs=40 batch_size=64 lr=0.05". ``names``: how a user addresses a
    section (a stage-1 run's "train" is "stage1"); origins in ``skip`` are left out. A key that a
    canonical spec leaves out at its default (schema.SINCE) shows that default."""
    values: dict[str, Any] = {"backbone": spec.backbone, **{f"data.{k}": v for k, v in spec.data.items()}}
    for stage, hp in spec.stages.items():
        values.update({f"{stage}.{k}": v for k, v in hp.items()})
    for key in spec.origins:  # keys that the canonical form left out at their default
        short = key.rsplit(".", 1)[-1]
        if key not in values and "." in key and short in SINCE and key.split(".")[0] in {"data", *spec.stages}:
            values[key] = SINCE[short]
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in values.items():
        section, _, short = key.rpartition(".") if "." in key else (key, "", key)
        origin = spec.origins.get(key, "origin not recorded")
        if origin in skip:
            continue
        groups.setdefault(((names or {}).get(section, section), origin), {})[short] = value
    sections = list(dict.fromkeys(s for s, _ in groups))
    ordered = sorted(groups, key=lambda so: (sections.index(so[0]), _origin_rank(so[1])))
    lines = []
    width = max([len(o) + 1 for _, o in ordered] + [12])
    for section, origin in ordered:
        vals = groups[(section, origin)]
        text = str(vals[section]) if section == "backbone" else " ".join(f"{k}={_value(v)}" for k, v in vals.items())
        lines += textwrap.wrap(text, max(WIDTH, width + 50), initial_indent=f"    {section:<9} {origin + ':':<{width}} ",
                               subsequent_indent=" " * (width + 15), break_long_words=False, break_on_hyphens=False)
    return lines


def _value(v: Any) -> str:
    """A value as --set and config files write it (true, 0.005, [0.8,0.9])."""
    if isinstance(v, (bool, list, dict)) or v is None:
        return json.dumps(v, separators=(",", ":"))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _epochs(rd: RunDir, spec: RunSpec) -> str:
    total = sum(hp.get("epochs", 0) for hp in spec.stages.values() if "epochs" in hp)
    try:
        done = len([r for r in rd.metrics() if "epoch" in r])
    except DamagedRecord:
        done = None
    return f"{'?' if done is None else done}/{total} epochs"


def run_status(rd: RunDir, spec: RunSpec, force: bool = False) -> str:
    """What `ltbench run` would do with this run, from its state in the store (sweep.run_state)."""
    from ..launch.sweep import run_state

    state, note = run_state(rd, None, None)
    if state == "done":
        return "done: would run again (--force)" if force else "done: skipped"
    if state == "unfinished":
        if rd.checkpoint_file.exists():
            return f"partly trained ({_epochs(rd, spec)}, checkpoint.pt): resumes from its checkpoint"
        return "started, no checkpoint yet: starts over"
    if state == "running":
        return "running now in another process: refused while it runs"
    if state == "pruned":
        return f"pruned ({_epochs(rd, spec)}{', ' + note if note else ''}): trains on to the end from its checkpoint"
    if state == "failed":
        return f"failed ({note}): runs again" + (", from its checkpoint" if rd.checkpoint_file.exists() else "")
    if state == "damaged":
        return f"damaged: {note}"
    return "new: would start"


def _head(spec: RunSpec, role: str = "") -> str:
    role = f" ({role})" if role else ""
    return (f"{spec.method}{role} on {spec.label()} ({spec.backbone}, recipe {spec.recipe}, seed {spec.seed})  "
            f"id {spec.run_id}")


def dry_run_text(specs: list[RunSpec], store: Store, force: bool = False) -> str:
    """`ltbench run --dry-run`: every run the command would start, a decoupled method's stage-1 run
    (once) before the runs on it, each with its state and its settings by origin."""

    from ..spec.inputs import default_note

    users = stage1_users(specs)
    order: dict[str, tuple[RunSpec, str]] = {}
    for s in specs:
        parent = s.parent_spec()
        if parent is not None:
            order.setdefault(parent.run_id, (parent, f"stage 1 of {', '.join(users[parent.run_id])}"))
        order.setdefault(s.run_id, (s, ""))
    number = {rid: i for i, rid in enumerate(order, 1)}
    lines = []
    for i, (spec, role) in enumerate(order.values(), 1):
        rd = store.run_dir(spec)
        lines.append(f"run {i}/{len(order)}  {_head(spec, role)}")
        lines.append(f"    state     {run_status(rd, spec, force)}")
        lines.append(f"    record    {rd.path}")
        note = default_note(spec)  # imagefolder's pretrained backbone, and how to train from scratch
        if note:
            lines.append(f"    default   {note}")
        if spec.parent is not None:
            lines.append(f"    stage 1   run {spec.parent_id} (run {number[spec.parent_id]} above): its backbone "
                         "and data")
        lines += settings_lines(spec, {"train": "stage1"} if role else None,
                                skip=("stage-1 run",) if spec.parent is not None else ())
    lines.append(f"dry run: {len(order)} runs; nothing started, nothing written (records in {store.root}).")
    return "\n".join(lines)


# --- ltbench show ----------------------------------------------------------------------------------

def find_run(store: Store, prefix: str) -> RunDir:
    """The run whose id starts with ``prefix``; an error that lists the candidates when several do."""
    if not prefix.strip():
        raise LtbenchError("`ltbench show`: give a run id (or its first characters); `ltbench status` lists them.")
    hits = [r for r in store.runs() if r.run_id.startswith(prefix)]
    if not hits:
        raise LtbenchError(f"no run in {store.root} has an id starting with {prefix!r}; `ltbench status --results "
                           f"{store.root}` lists the runs.")
    if len(hits) > 1:
        names = ", ".join(f"{r.run_id} ({r.path.parent.name} on {r.path.parent.parent.name})" for r in hits[:8])
        more = f" and {len(hits) - 8} more" if len(hits) > 8 else ""
        raise LtbenchError(f"{prefix!r} is the start of {len(hits)} run ids in {store.root}: {names}{more}; give "
                           "more of the id.")
    return hits[0]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # unreachable


def files_lines(path: Path) -> list[str]:
    """The run directory's files with their sizes (a folder: its file count and total size)."""
    lines = []
    for p in sorted(path.iterdir()) if path.is_dir() else []:
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            lines.append(f"    {p.name + '/':<22} {_size(sum(f.stat().st_size for f in files)):>10}  "
                         f"({len(files)} files)")
        else:
            lines.append(f"    {p.name:<22} {_size(p.stat().st_size):>10}")
    return lines or ["    (none)"]


def result_lines(result: dict[str, Any]) -> list[str]:
    """Top-1, many / medium / few, the selection, and the classifier's norm spread of a record."""

    test = result["test"]
    groups = "  ".join(f"{g} {test[g]:.2f}" if test.get(g) is not None else f"{g} -" for g in ("many", "medium", "few"))
    lines = [f"    test top-1 {test['top1']:.2f}   {groups}", f"    {selection_text(result)}"]
    if isinstance(test.get("top5"), (int, float)):
        lines.insert(1, f"    test top-5 {test['top5']:.2f}")
    flip = result.get("test_flip_avg")
    if isinstance(flip, dict) and isinstance(flip.get("top1"), (int, float)):
        lines.append(f"    test top-1 averaged with the mirrored images {flip['top1']:.2f}")
    norms = result["classifier_norms"]
    if min(norms) > 0:
        lines.append(f"    classifier weight norms max/min {max(norms) / min(norms):.2f}")
    return lines + _params_lines(result)


def _params_lines(result: dict[str, Any]) -> list[str]:
    """The parameters that trained (in any stage) and the total; the backbone's weights and pretraining."""
    params, lines = result.get("params"), []
    if isinstance(params, dict) and isinstance(params.get("trainable"), int) and params.get("total"):
        text = f"    parameters trained {params['trainable']:,} of {params['total']:,}"
        text += f" ({100 * params['trainable'] / params['total']:.3g}%)"
        lines.append(text + (f"; text tower {params['text_tower']:,} (frozen, apart)" if params.get("text_tower") else ""))
    backbone = (result.get("method_record") or {}).get("backbone")
    if isinstance(backbone, dict):
        sha = f", sha256 {backbone['sha256'][:12]}" if backbone.get("sha256") else ""
        lines.append(f"    backbone weights: {backbone.get('source')}{sha}; pretrained on {backbone.get('pretraining')}")
        if backbone.get("overlap"):
            lines.append(f"    warning: pretrained on images of this benchmark ({backbone['overlap']})")
    return lines


def _state(rd: RunDir, spec: RunSpec) -> str:
    """done / running / failed (its error's last line) / unfinished (epochs done) / damaged (the file)."""
    from ..launch.sweep import run_state

    state, note = run_state(rd, None, None)
    if state == "unfinished":
        note = _epochs(rd, spec) + (", checkpoint.pt" if rd.checkpoint_file.exists() else ", no checkpoint yet")
    return f"{state} ({note})" if note else state


def _stage2_runs(store: Store, run_id: str) -> list[str]:
    """The runs of the store that build on stage-1 run ``run_id`` ("wb 388a693d74ac")."""
    users = []
    for rd in store.runs():
        try:
            spec = rd.spec()
        except DamagedRecord:
            continue
        if spec.get("parent") and RunSpec.from_json(spec["parent"]).run_id == run_id:
            users.append(f"{spec['method']} {rd.run_id}")
    return users


def show_text(store: Store, prefix: str) -> tuple[str, DamagedRecord | None]:
    """`ltbench show RUN_ID`: the record's spec with origins, its stage-1 run, result and files; and the
    damage that stopped the reading (a damaged spec.json or result.json), if any."""
    rd = find_run(store, prefix)
    lines = [f"run {rd.run_id}  ({rd.path})"]
    damage = None
    spec = None
    try:
        spec = RunSpec.from_json(rd.spec())
    except DamagedRecord as exc:
        damage = exc
    if spec is not None:
        lines[0] = f"run {rd.run_id}  {_head(spec).rsplit('  id ', 1)[0]}  ({rd.path})"
        lines.append(f"state: {_state(rd, spec)}")
        parent = spec.parent_spec()
        if parent is not None:
            where = store.run_dir(parent)
            lines.append(f"stage 1: run {parent.run_id} ({'its record is gone' if not where.path.exists() else where.state()})")
        users = _stage2_runs(store, rd.run_id)
        if users:
            lines.append(f"stage 1 of: {', '.join(users)}")
        lines.append("settings (value, origin):")
        lines += settings_lines(spec, skip=("stage-1 run",) if parent is not None else ())
        if parent is not None:
            lines.append(f"stage-1 run {parent.run_id} settings:")
            lines += settings_lines(parent, {"train": "stage1"})
        if rd.is_done():
            try:
                lines += ["result:", *result_lines(rd.result())]
            except DamagedRecord as exc:
                damage = exc
    lines += ["files:", *files_lines(rd.path)]
    return "\n".join(lines), damage


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
