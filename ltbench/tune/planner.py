"""From a `ltbench tune` command to its studies: one per method and benchmark, each with its search space
(``space.space_for``), budget, sampler and pruner, checked before anything is written; and the run spec of a
trial, planned by the one front door (``RunRequest``) as `ltbench run --set KEY=VALUE` plans it."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from ..errors import LtbenchError
from ..spec.run_spec import Override
from .plan import PRUNERS, SAMPLERS, StudyPlan, fixed_settings
from .space import Param, qualify, space_for, split_item, unknown_key, value_text

if TYPE_CHECKING:
    from ..results.store import Store
    from ..spec.request import RunRequest
    from ..spec.run_spec import RunSpec

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def trial_spec(request: RunRequest, plan: StudyPlan, values: dict[str, Any], store: Store,
               origin: str | None = None) -> RunSpec:
    """The run of a trial with ``values`` (searched key -> value): the request's selectors and --set, plus
    one --set per searched key. Its run id is the one `ltbench run` gives with the same --set values; the
    origin (spec.json: ``tune NAME``) is not hashed."""
    origin = origin or f"tune {plan.name}"
    sets = [Override(k.partition(".")[0], k.partition(".")[2], v, f"{k}={value_text(v)}", origin)
            for k, v in values.items()]
    one = dataclasses.replace(request, method=plan.method, dataset=plan.benchmark, sets=[*_sets(request), *sets])
    return one.specs(store)[0]


def _sets(request: RunRequest) -> list[Any]:
    sets = request.sets
    if sets is None:
        return []
    if isinstance(sets, (str, dict)):
        from ..spec.request import _sets as normalise

        return normalise(sets)
    return list(sets)


def plan_studies(request: RunRequest, searches: list[str], trials: int, sampler: str, pruner: str,
                 study: str | None, store: Store) -> list[StudyPlan]:
    """The studies of a `ltbench tune` command, one per (benchmark, method) of its selectors: everything a
    user can get wrong is one LtbenchError here, before anything is written."""
    if trials < 1:
        raise LtbenchError(f"--trials {trials}: must be at least 1.")
    for option, value, known in (("--sampler", sampler, SAMPLERS), ("--pruner", pruner, PRUNERS)):
        if value not in known:
            raise LtbenchError(f"{option} {value!r}: expected one of {', '.join(known)}.")
    if study is not None and not NAME.fullmatch(study):
        raise LtbenchError(f"--study {study!r}: letters, digits, '.', '_' and '-' only, starting with a letter or "
                           "digit (it names a file in <results>/studies/).")
    seeds = request.selection().seeds
    if len(seeds) != 1:
        raise LtbenchError(f"--seed {','.join(map(str, seeds))}: a study tunes on one seed; run the best values on "
                           "more seeds afterwards (`ltbench run ... --seed 1,2`: they join the tuned row).")
    specs = request.specs(store)
    for item in searches:  # a key that no method's stages have (bare keys in two stages raise in qualify)
        key, _ = split_item(item)
        if not any(qualify(key, s) is not None for s in specs):
            raise unknown_key(key, specs)
    plans = []
    for spec in specs:
        space = space_for(spec, searches)
        _refuse_epochs_twice(request, spec, space)
        for p in space:
            check_bounds(request, spec, p, store)
        plan = StudyPlan("", spec.method, spec.benchmark, spec.label(), spec.seed, space, trials, sampler, pruner,
                         fixed_settings(spec, space), spec.run_id)
        plan.name = _name(study, plan, specs)
        plans.append(plan)
    return plans


def _name(study: str | None, plan: StudyPlan, specs: list[RunSpec]) -> str:
    if study is None:
        return plan.default_name()
    if len(specs) == 1:
        return study
    several = len({s.benchmark for s in specs}) > 1
    return f"{study}-{plan.method}" + (f"-{plan.benchmark}" if several else "")


def _refuse_epochs_twice(request: RunRequest, spec: RunSpec, space: list[Param]) -> None:
    """--epochs sets the first training stage's epochs (stage 1 of a decoupled method): searching them too
    is a conflict (--set of a searched key is refused by the planner itself, in check_bounds)."""
    if request.epochs is None:
        return
    first = "stage1" if spec.parent is not None else next(iter(spec.stages), "train")
    if any(p.key == f"{first}.epochs" for p in space):
        raise LtbenchError(f"--epochs {request.epochs} and --search {first}.epochs both set {first}.epochs; keep "
                           "one of them.")


def check_bounds(request: RunRequest, spec: RunSpec, p: Param, store: Store) -> None:
    """Plan the run at each end of the range (or each choice) with the other settings as given: a value that
    a run would refuse (a warm-up as long as the stage, a key that another setting makes unused, a key
    that --set or the config file sets too) is one line now, not a failed trial later."""
    values = [v for _, v in p.choices] if p.kind == "choice" else [int(p.low), int(p.high)] if p.kind == "int" \
        else [p.low, p.high]
    plan = StudyPlan("", spec.method, spec.benchmark, "", spec.seed, [p], 1, "random", "none")
    for v in values:
        trial_spec(request, plan, {p.key: v}, store, origin="--search")

