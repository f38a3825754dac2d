"""The loop every worker of a study runs (in the `ltbench tune` process, or as a local or SLURM job):

    claim a trial (under the study's guard: fail and retry the trials of dead workers, check the budget,
    ask the sampler, lock the trial) -> plan its run -> run it through the engine as any run -> tell.

A trial's run is an ordinary run of the store: a finished one is reused (its validation score told at
once), a pruned or killed one resumes from its checkpoint. After each epoch the run's per-epoch validation
(metrics.jsonl, the class-mean accuracy tables select on) is reported to the trial and the pruner may stop
the run (``Pruned``: its record says PRUNED, not DONE). The objective is the run's validation class-mean
accuracy of its reported checkpoint; test numbers never reach the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import submitit

from ..errors import LtbenchError
from ..results.store import RunDir, Store
from .plan import StudyPlan
from .planner import trial_spec
from .study import MAX_RETRIES, guard, open_study, trial_dir

if TYPE_CHECKING:
    import optuna

    from ..spec.request import RunRequest
    from ..spec.run_spec import RunSpec

WAIT_POLL_S = 2.0  # how often a worker looks whether another worker finished the run (or stage 1) it needs


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class TuneJob:
    """What a worker is given (picklable): the command's request (selectors, --set, paths, run options), its
    studies in order, and which worker it is."""

    request: RunRequest
    plans: list[StudyPlan]
    worker: int = 0
    launcher: str = "inline"
    threads: int | None = None


class TuneWorker(submitit.helpers.Checkpointable):
    """The function a local or SLURM worker job calls. Preempted or timed out, the job is resubmitted as
    it is (submitit's checkpoint); the trial it was running is failed without counting and retried by the
    next claim, and its run resumes from its checkpoint."""

    def __call__(self, job: TuneJob) -> dict[str, int]:
        import torch

        threads = job.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads:
            torch.set_num_threads(threads)
        return work(job)


def work(job: TuneJob) -> dict[str, int]:
    """Run trials of each study in turn until its budget is spent; how the trials of this worker ended."""
    store = Store(job.request.results)
    ended: Counter[str] = Counter()
    for plan in job.plans:
        from .samplers import make_sampler

        study = open_study(store.root, plan, create=False)
        study.sampler = make_sampler(plan, job.worker, len(study.get_trials(deepcopy=False)))
        while (claimed := claim(study, plan, store)) is not None:
            trial, held = claimed
            with held:
                ended[run_trial(job, plan, study, trial, store)] += 1
    return dict(ended)


def claim(study: optuna.Study, plan: StudyPlan, store: Store) -> tuple[optuna.Trial, contextlib.ExitStack] | None:
    """The next trial of this worker with its lock held, or None when the budget is spent; one step under
    the study's guard, so that parallel workers never start more than ``plan.trials`` trials."""
    with guard(store.root, plan.name):
        reap_lost(study, plan, store)
        if not room(study, plan):
            return None
        trial = study.ask()
        folder = trial_dir(store.root, plan.name, trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        held = contextlib.ExitStack()
        held.enter_context(RunDir(folder).locked())
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(),
                                       "slurm_job": os.environ.get("SLURM_JOB_ID")})
        return trial, held


def room(study: optuna.Study, plan: StudyPlan) -> bool:
    """Whether another trial may start: a retried one is waiting, or fewer than the budget count (complete,
    pruned, failed by their run, running). A grid's budget is at most its number of points."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                  or (t.state == TrialState.FAIL and bool(t.user_attrs.get("counted"))) for t in trials)
    return counted < plan.budget


def reap_lost(study: optuna.Study, plan: StudyPlan, store: Store) -> None:
    """Fail the running trials whose worker is gone (their trial lock is not live: the process died, or its
    SLURM job was requeued) without counting them, and queue each again with the same values (Optuna's
    RetryHeartbeatStaleTrialCallback, at most MAX_RETRIES times)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if RunDir(trial_dir(store.root, plan.name, t.number)).lock_is_live():
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, t)
        say(f"trial {t.number} of {plan.name}: its worker is gone; failed (not counted) and queued again with the "
            f"same values ({' '.join(t.user_attrs.get('set', [])) or 'none drawn yet'})")


class Reporter:
    """``RunOptions.on_epoch`` of a trial's run: after each epoch, report the run's per-epoch validation from
    its metrics.jsonl (steps 1, 2, ... over its rows, so a resumed run reports its earlier epochs too) and
    stop the run when the pruner says so (never after its last epoch: the run is finished then)."""

    def __init__(self, trial: optuna.Trial, spec: RunSpec, study: str):
        self.trial, self.run_id, self.study, self.reported = trial, spec.run_id, study, 0
        self.epochs = sum(int(hp.get("epochs", 0)) for hp in spec.stages.values())

    def __call__(self, rd: RunDir, row: dict[str, Any]) -> None:
        from ..engine.training import Pruned

        if rd.run_id != self.run_id:  # its stage-1 run (shared with other trials): never pruned
            return
        scores = [r["val_class_mean"] for r in rd.metrics() if isinstance(r.get("val_class_mean"), (int, float))]
        for step, value in enumerate(scores[self.reported:], self.reported + 1):
            self.trial.report(value, step)
        self.reported = len(scores)
        if scores and len(scores) < self.epochs and self.trial.should_prune():
            raise Pruned({"study": self.study, "trial": self.trial.number, "epoch": len(scores),
                          "value": scores[-1]})


def run_trial(job: TuneJob, plan: StudyPlan, study: optuna.Study, trial: optuna.Trial, store: Store) -> str:
    """Plan, run and tell one trial; how it ended (done, pruned, failed). An error that is not the run's
    own (missing data, a full disk) fails the trial without counting and stops the worker."""
    from optuna.trial import TrialState

    from ..engine.training import Pruned

    values = {p.key: p.suggest(trial) for p in plan.space}
    sets = _set_texts(values)
    try:
        spec = trial_spec(job.request, plan, values, store)
    except LtbenchError as exc:  # values that a run refuses together (each alone was checked): a failed trial
        trial.set_user_attr("set", sets)
        trial.set_user_attr("outcome", f"failed: {exc}")
        trial.set_user_attr("counted", True)
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number} of {plan.name}: {' '.join(sets)} cannot run ({exc})")
        return "failed"
    trial.set_user_attr("run_id", spec.run_id)
    trial.set_user_attr("set", sets)
    rd = store.run_dir(spec)
    state = "done, reused" if rd.is_done() else "resumes" if rd.checkpoint_file.exists() else "new"
    say(f"trial {trial.number} of {plan.name}: {' '.join(sets)} -> run {spec.run_id} ({state})")
    opts = dataclasses.replace(job.request.run_options(), on_epoch=Reporter(trial, spec, plan.name),
                               extra_env={"launcher": job.launcher, "tune_study": plan.name,
                                          "tune_trial": trial.number})
    started = time.time()
    try:
        result = execute_when_free(spec, store, opts)
    except Pruned as exc:
        trial.set_user_attr("outcome", f"pruned after epoch {exc.record['epoch']}")
        study.tell(trial, state=TrialState.PRUNED)
        say(f"trial {trial.number} of {plan.name}: pruned after epoch {exc.record['epoch']} (val "
            f"{exc.record['value']:.2f})")
        return "pruned"
    except Exception as exc:
        failure = _run_failure(spec, store, started)
        if failure is None:  # not the run's doing (missing data, a full disk): not counted; the worker stops
            trial.set_user_attr("outcome", f"error: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("outcome", f"failed: {failure}")
        trial.set_user_attr("counted", True)
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number} of {plan.name}: its run failed ({failure})")
        return "failed"
    value = result["val"].get("class_mean")
    if value is None:
        trial.set_user_attr("outcome", "error: no validation score")
        study.tell(trial, state=TrialState.FAIL)
        raise LtbenchError(f"run {spec.run_id} has no validation score ({spec.label()} has no validation split); "
                           "tune's objective is the validation accuracy that tables select on, never test.")
    trial.set_user_attr("outcome", "done")
    study.tell(trial, value)
    say(f"trial {trial.number} of {plan.name}: val {value:.2f} (run {spec.run_id})")
    return "done"


def _set_texts(values: dict[str, Any]) -> list[str]:
    from .space import value_text

    return [f"{k}={value_text(v)}" for k, v in values.items()]


def _run_failure(spec: RunSpec, store: Store, since: float) -> str | None:
    """The last line of the FAILED record that the trial's run (or its stage-1 run) wrote since ``since``;
    None when neither failed (the error came from elsewhere)."""
    from ..errors import DamagedRecord

    for s in (spec, spec.parent_spec()):
        rd = store.run_dir(s) if s is not None else None
        if rd is not None and rd.failed_file.exists() and rd.failed_file.stat().st_mtime >= since - 1:
            try:
                lines = [ln for ln in rd.failure().splitlines() if ln.strip()]
            except DamagedRecord:
                lines = []
            where = "" if s is spec else f"its stage-1 run {rd.run_id}: "
            return where + (lines[-1].strip() if lines else "FAILED")
    return None


def execute_when_free(spec: RunSpec, store: Store, opts: Any) -> dict[str, Any]:
    """``execute`` the run once neither it nor its stage-1 run is being trained by another process (a
    stage-1 run that trials share is trained by one worker; the others wait for it, then reuse it)."""
    from ..engine.training import execute

    runs = [store.run_dir(s) for s in (spec.parent_spec(), spec) if s is not None]
    told = False
    while True:
        busy = [rd for rd in runs if rd.lock_is_live()]
        if not busy:
            try:
                return execute(spec, store, opts)
            except LtbenchError:
                if not any(rd.lock_is_live() for rd in runs):  # not a race with another worker
                    raise
                continue
        if not told:
            say(f"run {busy[0].run_id} is being trained by another worker; waiting for it")
            told = True
        time.sleep(WAIT_POLL_S)
