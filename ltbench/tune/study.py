"""A study: its storage, identity, sampler and pruner, and its summary.

    <results>/studies/<name>.journal       Optuna's journal file storage: the study and its trials (any
                                            process on a shared file system may append to it)
    <results>/studies/<name>.lock          held (flock) while a worker claims a trial: budget, reaping, ask
    <results>/studies/<name>.trials/<n>/   a trial's lock (ltbench.results.store's: owner, heartbeat) while
                                            a worker runs it

The study's user attribute ``ltbench`` records what it searches and for what (``StudyPlan.attrs``): the
method, the benchmark, the settings it does not search (the run spec without the searched keys), the
search space, the objective, the sampler and the pruner. A study name reused with another of these is
refused. A trial records its run (``run_id``), the --set values of that run (``set``) and how it ended
(``outcome``).

Trials that count against the budget (``--trials``): complete, pruned, failed by their run (NaN loss, a
crash: the run's FAILED record), running and waiting. A trial whose worker died (killed, preempted) is
failed without counting and queued again with the same values, as a waiting trial (Optuna's
RetryHeartbeatStaleTrialCallback, at most MAX_RETRIES times); its run resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LtbenchError
from .plan import PRUNERS, SAMPLERS, STUDIES, StudyPlan

if TYPE_CHECKING:
    import optuna


MAX_RETRIES = 2  # a trial whose worker died is run again at most this often


def studies_dir(root: Path | str) -> Path:
    return Path(root) / STUDIES


def journal_file(root: Path | str, name: str) -> Path:
    return studies_dir(root) / f"{name}.journal"


def trial_dir(root: Path | str, name: str, number: int) -> Path:
    return studies_dir(root) / f"{name}.trials" / str(number)


def quiet_optuna() -> Any:
    """optuna, with its own log lines (one per trial) silenced: ltbench prints its own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(path: Path) -> Any:
    """Optuna's journal file storage at ``path`` (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


@contextlib.contextmanager
def guard(root: Path | str, name: str) -> Iterator[None]:
    """Exclusive among the workers of a study while it lasts (an flock on ``<name>.lock``; on a file
    system without flock it runs unguarded): claiming a trial is counting the budget, reaping lost trials
    and asking the sampler, as one step."""
    from ..files import FILE_MODE

    fd = os.open(studies_dir(root) / f"{name}.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        with contextlib.suppress(OSError):  # no flock here: unguarded
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _differences(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    words = {"method": "method", "benchmark": "benchmark", "fixed": "fixed settings (the run spec without the "
             "searched keys)", "space": "search space", "objective": "objective", "sampler": "sampler",
             "pruner": "pruner", "grid": "grid points"}
    parts = []
    for key, what in words.items():
        if theirs.get(key) != mine.get(key):
            a, b = theirs.get(key), mine.get(key)
            shown = "" if key in ("fixed", "grid") else f" ({' '.join(a) if isinstance(a, list) else a} there, " \
                f"{' '.join(b) if isinstance(b, list) else b} here)"
            parts.append(what + shown)
    return "; ".join(parts)


def open_study(root: Path | str, plan: StudyPlan, create: bool) -> optuna.Study:
    """The study of ``plan`` (created when missing and ``create``); a study of that name made for another
    method, benchmark, fixed settings, space, objective, sampler or pruner is refused in one line."""
    optuna = quiet_optuna()
    path = journal_file(root, plan.name)
    if not create and not path.exists():
        raise LtbenchError(f"no study {plan.name!r} in {studies_dir(root)} (its journal file is gone?); run the same "
                           "`ltbench tune` command again to start it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    store = storage(path)
    from .samplers import make_pruner, make_sampler

    sampler, pruner = make_sampler(plan), make_pruner(plan.pruner)
    try:
        study = optuna.load_study(study_name=plan.name, storage=store, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise LtbenchError(f"no study {plan.name!r} in {path}; run the same `ltbench tune` command again.") \
                from None
        try:
            study = optuna.create_study(study_name=plan.name, storage=store, sampler=sampler, pruner=pruner,
                                        direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:  # another command created it a moment ago
            return open_study(root, plan, create=False)
        study.set_user_attr("ltbench", plan.attrs())
        return study
    theirs = study.user_attrs.get("ltbench")
    if not isinstance(theirs, dict):
        raise LtbenchError(f"study {plan.name!r} in {path} was not made by `ltbench tune`; pick another --study name.")
    mine = plan.identity()
    if any(theirs.get(k) != v for k, v in mine.items()):
        raise LtbenchError(f"study {plan.name!r} ({path}) differs from this command in its {_differences(theirs, mine)}"
                           f"; pick another --study name, or delete {path} to start it over.")
    if create and theirs.get("trials") != plan.budget:
        study.set_user_attr("ltbench", {**theirs, "trials": plan.budget})
    return study


# ----------------------------------------------------------------------------------- summaries


@dataclass
class TrialInfo:
    number: int
    state: str  # complete | pruned | failed (by its run) | lost (its worker died) | error | running | waiting
    value: float | None
    run_id: str | None
    sets: list[str]
    outcome: str
    params: dict[str, Any]
    intermediate: dict[int, float]


@dataclass
class StudySummary:
    """A study as `ltbench status`, `ltbench table` and `ltbench plot tune` read it."""

    name: str
    path: Path
    attrs: dict[str, Any]
    trials: list[TrialInfo]

    def count(self, *states: str) -> int:
        return sum(t.state in states for t in self.trials)

    @property
    def counted(self) -> int:
        """The trials that count against the budget (``--trials``)."""
        return self.count("complete", "pruned", "failed", "running", "waiting")

    @property
    def best(self) -> TrialInfo | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return max(done, key=lambda t: (t.value, -t.number)) if done else None

    @property
    def method(self) -> str:
        return self.attrs.get("method", "?")

    def how(self) -> str:
        """"TPE, median pruner"."""
        return f"{SAMPLERS.get(self.attrs.get('sampler'), '?')}, {PRUNERS.get(self.attrs.get('pruner'), '?')}"

    def line(self) -> str:
        """One line of `ltbench status`: progress, and the best trial with its run and values."""
        a = self.attrs
        extra = [f"{self.count(s)} {s}" for s in ("pruned", "failed") if self.count(s)]
        live = [f"{self.count(s)} {s}" for s in ("running", "waiting", "lost", "error") if self.count(s)]
        done = self.count("complete", "pruned", "failed")
        text = (f"{self.name}: {self.method} on {a.get('label', a.get('benchmark'))} ({self.how()}): {done}/"
                f"{a.get('trials', '?')} trials" + (f" ({', '.join(extra)})" if extra else "")
                + (f", {', '.join(live)}" if live else ""))
        best = self.best
        if best is not None:
            text += f"; best val {best.value:.2f} at trial {best.number} (run {best.run_id}: {' '.join(best.sets)})"
        return text


def _trial_info(t: Any, root: Path, name: str) -> TrialInfo:
    from optuna.trial import TrialState

    from ..results.store import RunDir

    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.WAITING: "waiting",
             TrialState.RUNNING: "running"}.get(t.state, "failed")
    attrs = t.user_attrs
    if state == "failed" and not attrs.get("counted"):  # its worker died (retried), or an error stopped it
        state = "error" if str(attrs.get("outcome", "")).startswith("error") else "lost"
    if state == "running" and not RunDir(trial_dir(root, name, t.number)).lock_is_live():
        state = "lost"  # its worker is gone; the next worker (or `ltbench tune` again) retries it
    return TrialInfo(t.number, state, t.value if t.state == TrialState.COMPLETE else None, attrs.get("run_id"),
                     list(attrs.get("set", [])), attrs.get("outcome", ""), dict(t.params),
                     dict(t.intermediate_values))


def load_summary(path: Path) -> StudySummary | None:
    """The summary of the study in a journal file; None when it holds no ltbench study."""
    optuna = quiet_optuna()
    root, name = path.parent.parent, path.name[:-len(".journal")]
    try:
        study = optuna.load_study(study_name=name, storage=storage(path))
    except KeyError:
        return None
    attrs = study.user_attrs.get("ltbench")
    if not isinstance(attrs, dict):
        return None
    trials = [_trial_info(t, root, name) for t in study.get_trials(deepcopy=False)]
    return StudySummary(name, path, attrs, trials)


def summaries(root: Path | str) -> list[StudySummary]:
    """Every ltbench study under ``<root>/studies/`` (no Optuna import when there is none)."""
    folder = studies_dir(root)
    files = sorted(folder.glob("*.journal")) if folder.is_dir() else []
    return [s for s in (load_summary(f) for f in files) if s is not None]


def find_summary(root: Path | str, name: str) -> StudySummary:
    """The study named ``name`` (or the one whose name starts with it)."""
    found = summaries(root)
    hits = [s for s in found if s.name == name] or [s for s in found if s.name.startswith(name)]
    if len(hits) != 1:
        known = ", ".join(s.name for s in found) or "none"
        raise LtbenchError(f"{'no study' if not hits else f'{len(hits)} studies'} in {studies_dir(root)} named "
                           f"{name!r}; the studies there: {known} (`ltbench status` lists them).")
    return hits[0]


def status_lines(root: Path | str) -> list[str]:
    """What `ltbench status` says of the studies of ``root`` (nothing when there are none)."""
    found = summaries(root)
    if not found:
        return []
    return ["", "studies (ltbench tune; `ltbench plot tune NAME` draws one):", *(f"  {s.line()}" for s in found)]
