"""Curating the results store: `ltbench rm ID...` and `ltbench clean --failed|--incomplete|--where K=V|--features`.

Both list what they would remove (run, method, benchmark, state, size) and remove nothing without
--yes. Every check runs before the first removal, so a refusal leaves the store as it was:
- an unknown id or an ambiguous prefix, a missing results folder: one error line;
- a running run (its lock is live, see results.store.lock_live) is never removed: `rm` refuses it,
  `clean` lists it as skipped;
- a stage-1 run that finished stage-2 runs build on is refused unless --with-dependents also removes
  them (or they are among the runs removed);
- only directories inside ``<results>/runs/`` are removed: a run directory that is a symlink, or that
  resolves outside that folder, is refused.
Each run is removed while holding its lock, so a run that starts meanwhile is left alone.

`clean --features` removes the kept features of frozen backbones (ltbench.engine.training's features cache: a
pretrained backbone's in ``<results>/features/<backbone>/``, shared by every run on it; a stage-1 run's in its
``features/`` folder, read by its stage-2 runs) that no unfinished run may read: a folder is kept while a run
on that backbone (a stage-2 run on that stage-1 run) is not done: running, unfinished, failed or pruned, i.e.
one that the same command would resume or retry. Features are a cache only: a finished run never reads them
again, and a run that finds none extracts them anew. Listed with their sizes; removed only with --yes."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import DamagedRecord, LtbenchError
from .common import DEFAULT_RESULTS, Where, user_errors

if TYPE_CHECKING:  # the store and the specs are imported when a command runs: `ltbench --help` stays fast
    from ..results.store import RunDir, Store

FEATURES = "features"  # ltbench.engine.training.FEATURES (not imported: it loads torch)
Yes = typer.Option(False, "--yes", "-y", help="remove them (without it: only list what would be removed)")
WithDependents = typer.Option(False, "--with-dependents",
                              help="also remove the stage-2 runs that build on a removed stage-1 run")


def _where(rd: RunDir) -> tuple[str, str]:
    """(method, benchmark) from the run's place in the store (also for a run whose spec.json is damaged)."""
    return rd.path.parent.name, rd.path.parent.parent.name


def _name(rd: RunDir) -> str:
    method, benchmark = _where(rd)
    return f"{method} {rd.run_id} ({benchmark})"


def _bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if not p.is_symlink() and p.is_file():
                total += p.lstat().st_size
        except OSError:
            pass
    return total


def _store(results: Path) -> Store:
    from ..results.store import Store

    if not results.is_dir():
        raise LtbenchError(f"the results folder {results} does not exist; pass the --results folder that holds "
                           "the runs.")
    return Store(results)


def _dependents(store: Store) -> dict[str, list[RunDir]]:
    """Stage-1 run id -> the run directories whose spec builds on it (runs with a damaged spec.json are left
    out: their spec names no stage-1 run that can be read)."""
    from ..spec.run_spec import RunSpec

    users: dict[str, list[RunDir]] = {}
    for rd in store.runs():
        try:
            spec = rd.spec()
            parent = RunSpec.from_json(spec).parent_id if spec.get("parent") else None
        except (DamagedRecord, KeyError, TypeError, ValueError, LtbenchError):  # no stage-1 run to read from it
            continue
        if parent is not None:
            users.setdefault(parent, []).append(rd)
    return users


def _check_inside(store: Store, rd: RunDir) -> None:
    """Refuse a run directory that is a symlink or lies outside <results>/runs/ once resolved."""
    base = (store.root / "runs").resolve()
    path = rd.path.resolve()
    if rd.path.is_symlink() or not path.is_relative_to(base) or len(path.relative_to(base).parts) != 3:
        raise LtbenchError(f"{rd.path} is a symlink or resolves outside {base} (to {path}); ltbench removes only "
                           f"run folders inside {base}: remove it by hand if you mean to.")


def _with_dependents(store: Store, chosen: list[RunDir], with_dependents: bool) -> tuple[list[RunDir], dict[str, str]]:
    """``chosen`` plus, with --with-dependents, the stage-2 runs on its stage-1 runs; and the note of each
    added run. Without --with-dependents a stage-1 run that finished stage-2 runs (not also chosen) build
    on is an error that names them and the fix."""
    users = _dependents(store)
    ids = {rd.run_id for rd in chosen}
    runs, notes = list(chosen), {}
    refused = []
    for rd in chosen:
        others = [u for u in users.get(rd.run_id, []) if u.run_id not in ids]
        if with_dependents:
            for u in others:
                if u.run_id not in notes:
                    runs.append(u)
                    notes[u.run_id] = f"stage 2 on {rd.run_id} (--with-dependents)"
        else:
            kept = [f"{_name(u)[:-1]}, {u.state()})" for u in others if u.is_done() or u.lock_is_live()]
            if kept:
                refused.append(f"{rd.run_id} is the stage-1 run of {', '.join(kept)}")
    if refused:
        raise LtbenchError(f"{'; '.join(refused)}: nothing removed; add --with-dependents to remove them too, or "
                           "remove them first (`ltbench rm ID`).")
    return runs, notes


def _rmtree(path: Path) -> list[str]:
    """shutil.rmtree (never following a symlink); what it could not remove, in words."""
    errors: list[str] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _f, p, e: errors.append(f"{p}: {e}"))
    else:
        shutil.rmtree(path, onerror=lambda _f, p, e: errors.append(f"{p}: {e[1]}"))
    return errors


def _listing(runs: list[RunDir], notes: dict[str, str], sizes: dict[str, int]) -> str:
    from tabulate import tabulate

    from .show import _size

    rows = [[rd.run_id, *_where(rd), rd.state(), _size(sizes[rd.run_id]), notes.get(rd.run_id, "")] for rd in runs]
    headers = ["run", "method", "benchmark", "state", "size"]
    if any(notes.values()):
        headers.append("note")
    else:
        rows = [r[:-1] for r in rows]
    return tabulate(rows, headers=headers, tablefmt="simple")


def _remove(store: Store, runs: list[RunDir], notes: dict[str, str], yes: bool) -> None:
    """List ``runs``; with ``yes`` remove them (each under its lock) and the method and benchmark folders
    that this leaves empty."""
    if not runs:
        print("nothing to remove.")
        return
    for rd in runs:
        _check_inside(store, rd)
    from .show import _size

    sizes = {rd.run_id: _bytes(rd.path) for rd in runs}
    total = _size(sum(sizes.values()))
    print(_listing(runs, notes, sizes))
    if not yes:
        print(f"nothing removed; add --yes to remove these {len(runs)} runs ({total}).")
        return
    base = (store.root / "runs").resolve()
    failed = []
    for rd in runs:
        try:
            with rd.locked():  # a run that started since the checks keeps its lock: locked() refuses it
                errors = _rmtree(rd.path)
        except LtbenchError as exc:
            failed.append(f"{rd.run_id} ({exc})")
            continue
        if errors:
            failed.append(f"{rd.run_id} ({errors[0]})")
            continue
        for parent in (rd.path.parent, rd.path.parent.parent):
            if parent.resolve() == base or not parent.resolve().is_relative_to(base):
                break
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
    removed = len(runs) - len(failed)
    print(f"removed {removed} run{'s' if removed != 1 else ''} from {store.root / 'runs'}.")
    if failed:
        raise LtbenchError(f"not removed: {'; '.join(failed)}.")


@dataclass
class FeatureFolder:
    """A folder of kept features: ``of`` says whose, ``users`` the unfinished runs that may read it."""

    path: Path
    of: str
    users: list[str] = field(default_factory=list)


def _feature_folders(store: Store, removed: set[str]) -> list[FeatureFolder]:
    """Every folder of kept features in the store (``<results>/features/<backbone>/``, and the ``features/`` of
    each run not in ``removed``), each with the runs that may still read it: the runs not done (and not in
    ``removed``) on that backbone, or on that stage-1 run. A run whose spec.json does not read is nobody's user
    (it cannot run); a folder that is a symlink or resolves elsewhere is an error, before anything is removed."""
    from ..spec.run_spec import RunSpec

    shared: dict[str, FeatureFolder] = {}
    root = store.root / FEATURES
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() or p.is_symlink():  # one folder per backbone (a stray file is not ltbench's)
                shared[p.name] = FeatureFolder(p, f"{p.name} (pretrained backbone, shared)")
    runs = [rd for rd in store.runs() if rd.run_id not in removed]
    own = {rd.run_id: FeatureFolder(rd.path / FEATURES, f"stage-1 run {rd.run_id} ({_where(rd)[0]}, {_where(rd)[1]})")
           for rd in runs if (rd.path / FEATURES).exists() or (rd.path / FEATURES).is_symlink()}
    for rd in runs:
        if rd.is_done():
            continue
        try:
            spec = RunSpec.from_json(rd.spec())
        except (DamagedRecord, KeyError, TypeError, ValueError, LtbenchError):
            continue
        user = f"{_name(rd)[:-1]}, {rd.state()})"
        for folder in (shared.get(spec.backbone.replace(":", "_")), own.get(spec.parent_id or "")):
            if folder is not None:
                folder.users.append(user)
    folders = [*shared.values(), *own.values()]
    base = store.root.resolve()
    for f in folders:
        if f.path.is_symlink() or not f.path.is_dir() or not f.path.resolve().is_relative_to(base):
            raise LtbenchError(f"{f.path} is a symlink, not a folder, or resolves outside {base}; nothing removed: "
                               "ltbench removes only feature folders inside the results folder; remove it by hand "
                               "if you mean to.")
    return folders


def _remove_features(store: Store, folders: list[FeatureFolder], yes: bool) -> None:
    """List the folders of kept features that no unfinished run may read (with their sizes) and those kept;
    with ``yes`` remove the former (and ``<results>/features/`` when that leaves it empty)."""
    from tabulate import tabulate

    from .show import _size

    for f in folders:
        if f.users:
            print(f"kept {f.path}: {len(f.users)} unfinished run{'s' if len(f.users) != 1 else ''} may read them "
                  f"({', '.join(f.users[:3])}{', ...' if len(f.users) > 3 else ''})")
    unused = [f for f in folders if not f.users]
    if not unused:
        print("no kept features to remove.")
        return
    sizes = [_bytes(f.path) for f in unused]
    rows = [[str(f.path.relative_to(store.root)), f.of, _size(n)] for f, n in zip(unused, sizes, strict=True)]
    print(tabulate(rows, headers=["features", "of", "size"], tablefmt="simple"))
    total = _size(sum(sizes))
    if not yes:
        print(f"nothing removed; add --yes to remove these {len(unused)} feature folders ({total}).")
        return
    failed = [f"{f.path} ({errors[0]})" for f in unused if (errors := _rmtree(f.path))]
    try:
        (store.root / FEATURES).rmdir()  # only when empty
    except OSError:
        pass
    print(f"removed {len(unused) - len(failed)} feature folders ({total}) from {store.root}.")
    if failed:
        raise LtbenchError(f"not removed: {'; '.join(failed)}.")


@user_errors
def rm(
    run_ids: list[str] = typer.Argument(..., metavar="ID", help="run ids, or their first characters (`ltbench status` lists them)"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    yes: bool = Yes, with_dependents: bool = WithDependents,
) -> None:
    """Remove runs from the store. Without --yes it only lists them (run, method, benchmark, state,
    size). A running run is refused; so is a stage-1 run that finished stage-2 runs build on, unless
    --with-dependents removes those too."""
    from .show import find_run

    store = _store(results)
    chosen: dict[str, RunDir] = {}
    for prefix in run_ids:
        if not prefix.strip():
            raise LtbenchError("`ltbench rm`: give run ids (or their first characters); `ltbench status` lists them.")
        rd = find_run(store, prefix)
        chosen.setdefault(rd.run_id, rd)
    runs, notes = _with_dependents(store, list(chosen.values()), with_dependents)
    running = [_name(rd) for rd in runs if rd.lock_is_live()]
    if running:
        raise LtbenchError(f"{', '.join(running)} {'is' if len(running) == 1 else 'are'} running now (a live lock); "
                           "nothing removed; wait for it to finish or end it, then try again.")
    _remove(store, runs, notes, yes)


@user_errors
def clean(
    failed: bool = typer.Option(False, "--failed", help="the failed runs (FAILED written)"),
    incomplete: bool = typer.Option(False, "--incomplete",
                                    help="the runs that stopped unfinished: no DONE, no FAILED, not running"),
    where: Where = None,
    features: bool = typer.Option(False, "--features", help="the kept features of frozen backbones "
                                  "(<results>/features/, stage-1 runs' features/) that no unfinished run may read "
                                  "(with the options above: once their runs are removed)"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    yes: bool = Yes, with_dependents: bool = WithDependents,
) -> None:
    """Remove the failed and/or unfinished runs of the store, or with --where KEY=VALUE the runs whose
    setting has that value (finished ones too: `--where train.epochs=3` removes a smoke test's runs);
    with --features the kept features that no unfinished run may read (a cache: a finished run never reads
    them again). Without --yes it only lists them. A run that is running now (its lock is live) is never
    removed: it is listed as skipped."""
    if not (failed or incomplete or where or features):
        raise LtbenchError("`ltbench clean`: say what to remove: --failed, --incomplete, --where KEY=VALUE, "
                           "--features, or several (--where then narrows --failed and --incomplete).")
    store = _store(results)
    if not (failed or incomplete or where):
        _remove_features(store, _feature_folders(store, set()), yes)
        return
    chosen, skipped = [], []
    for rd in _matching(store, where):
        is_failed = rd.failed_file.exists()
        if (failed or incomplete) and (rd.is_done() or not (failed and is_failed or incomplete and not is_failed)):
            continue
        if rd.lock_is_live():
            skipped.append(f"skipped {_name(rd)}: it is running now (its lock {rd.lock_file} is live)")
            continue
        chosen.append(rd)
    runs, notes = _with_dependents(store, chosen, with_dependents)
    live = [rd for rd in runs if rd.run_id in notes and rd.lock_is_live()]
    if live:
        raise LtbenchError(f"the stage-2 run(s) {', '.join(map(_name, live))} are running now; nothing removed; "
                           "try again when they have finished.")
    folders = _feature_folders(store, {rd.run_id for rd in runs}) if features else []  # its checks first
    for line in skipped:
        print(line)
    _remove(store, runs, notes, yes)
    if features:
        _remove_features(store, folders, yes)


def _matching(store: Store, where: list[str] | None) -> list[RunDir]:
    """The store's runs whose spec meets every --where condition (all of them without --where); a run
    whose spec.json does not read meets none."""
    from ..results import where as where_

    runs = store.runs()
    conditions = where_.parse_where(where)
    if not conditions:
        return runs
    specs = {}
    for rd in runs:
        try:
            specs[rd.run_id] = rd.spec()
        except DamagedRecord:
            continue
    where_.check_keys(conditions, specs.values())
    return [rd for rd in runs if rd.run_id in specs and where_.matches(specs[rd.run_id], conditions)]
