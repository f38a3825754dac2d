"""What a study is asked to do (``StudyPlan``: one method on one benchmark, its space, budget, sampler and
pruner), and what a study's name stands for (``StudyPlan.identity``). Picklable: workers are given it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .space import Param, grid_space

if TYPE_CHECKING:
    from ..spec.run_spec import RunSpec

STUDIES = "studies"  # <results>/studies/: the journal files
OBJECTIVE = "val.class_mean"  # what tables select on: validation class-mean accuracy (never test)
SAMPLERS = {"tpe": "TPE", "gp": "GP", "random": "random search", "grid": "grid"}
PRUNERS = {"none": "no pruner", "median": "median pruner", "asha": "ASHA pruner"}


@dataclass
class StudyPlan:
    """One study of a `ltbench tune` command: one method on one benchmark, its space and budget. Picklable:
    workers get it."""

    name: str
    method: str
    benchmark: str
    label: str
    seed: int
    space: list[Param]
    trials: int
    sampler: str
    pruner: str
    fixed: dict[str, Any] = field(default_factory=dict)  # the run spec without the searched keys
    base_run: str = ""  # the run id at the method's own values of the searched keys

    def identity(self) -> dict[str, Any]:
        """What a study name stands for: a reused name must have all of it (a grid: its points too)."""
        fixed = hashlib.sha256(json.dumps(self.fixed, sort_keys=True).encode()).hexdigest()[:16]
        out = {"method": self.method, "benchmark": self.benchmark, "fixed": fixed,
               "space": [p.describe() for p in self.space], "objective": OBJECTIVE, "sampler": self.sampler,
               "pruner": self.pruner}
        if self.sampler == "grid":
            out["grid"] = grid_space(self.space, self.trials)
        return out

    @property
    def budget(self) -> int:
        """The trials the study runs: --trials, or the grid's points where they are fewer."""
        return min(self.trials, grid_size(self)) if self.sampler == "grid" else self.trials

    def attrs(self) -> dict[str, Any]:
        return {**self.identity(), "label": self.label, "seed": self.seed, "trials": self.budget,
                "base_run": self.base_run, "version": 1}

    def default_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.method}-{self.benchmark}-{digest}"

    @property
    def journal(self) -> str:
        return f"{STUDIES}/{self.name}.journal"


def fixed_settings(spec: RunSpec, params: list[Param]) -> dict[str, Any]:
    """The canonical spec of a run without the searched keys (and their stage-1 run's): what every trial
    of a study shares."""
    canon = json.loads(json.dumps(spec.canonical()))
    for p in params:
        stage, _, key = p.key.partition(".")
        target = canon["parent"]["stages"]["train"] if stage == "stage1" else canon["stages"][stage]
        target.pop(key, None)
    return canon


def grid_size(plan: StudyPlan) -> int:
    """The points of a study's grid (``--sampler grid``)."""
    return math.prod(len(v) for v in grid_space(plan.space, plan.trials).values())
