"""The samplers and pruners of `ltbench tune`: Optuna's, configured (imported only when a study opens)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import optuna

from .space import grid_space

if TYPE_CHECKING:
    from .plan import StudyPlan


class AskTellGrid(optuna.samplers.GridSampler):
    """Optuna's GridSampler for workers that ask and tell: the study's budget (ltbench.tune.worker.room) ends
    the grid, where GridSampler would call study.stop(), which only an optimize() loop may call."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def make_sampler(plan: StudyPlan, worker: int = 0, offset: int = 0) -> Any:
    """The study's sampler, seeded by the run's seed, the worker's index and how many trials the study had
    when the worker started (so that workers, and a study continued, draw different values). TPE and GP
    start after max(2, min(10, trials // 3)) random trials; TPE runs with constant_liar (workers in
    parallel); grid: ``space.grid_space``."""
    seed = (plan.seed * 1_000_003 + worker * 10_007 + offset) % 2**32
    startup = max(2, min(10, plan.trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if plan.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
        if plan.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if plan.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return AskTellGrid(grid_space(plan.space, plan.trials), seed=seed)


def make_pruner(name: str) -> Any:
    """none: never prunes; median: Optuna's MedianPruner (its defaults: once 5 trials finished, a trial below
    the median of the others at the same epoch stops); asha: its SuccessiveHalvingPruner with rungs after 1,
    3, 9, 27, ... epochs (min_resource 1, reduction factor 3): at each rung a trial goes on only among the
    best third of the trials that reached it."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()
