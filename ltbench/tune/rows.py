"""`ltbench table` and the studies of `ltbench tune`: the runs of a study's trials never join a method's recipe
row (its choice on validation among the store's configurations), and each study with a finished trial adds a
row of its own, ``METHOD (tuned)``: the best trial's configuration (the runs of it on more seeds too: they
join the row), carrying what the table's note and effort column say of it (``tuned``: trials, sampler,
pruner, values, the device time of the study's runs; ltbench.results.tables draws them).

A trial run whose searched settings are the method's own values is the recipe's run too, and stays in the
recipe row. Without studies under ``<results>/studies/`` nothing changes (and Optuna is not imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .study import StudySummary


def with_tuned_rows(results: list[dict[str, Any]], root: Path,
                    select: str = "val") -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a table with the trials of the studies in ``root`` taken out of the recipe rows and,
    under ``select="val"``, each study's best configuration added as its tuned row (``table_row``, ``tuned``);
    and a note when trials were left out of a ``select="last"`` table."""
    from .study import studies_dir

    folder = studies_dir(root)
    if not folder.is_dir() or not any(folder.glob("*.journal")):
        return results, []
    from ..results.tables import _config_key, is_eval
    from .study import summaries

    studies = summaries(root)
    runs = [r for r in results if not is_eval(r)]
    by_id = {r["run_id"]: r for r in runs}
    searched: dict[str, set[str]] = {}  # configuration -> the keys its studies searched
    parents: set[str] = set()  # stage-1 runs of trials
    for s in studies:
        keys = {p.split("=", 1)[0] for p in s.attrs.get("space", [])}
        for t in s.trials:
            r = by_id.get(t.run_id or "")
            if r is not None:
                searched.setdefault(_config_key(r), set()).update(keys)
                parents.add(r["method_record"].get("parent") or "")
    recipe = [r for r in runs if not (_config_key(r) in searched and not _at_defaults(r, searched[_config_key(r)]))]
    used = {r["method_record"].get("parent") for r in recipe}
    keep = {r["run_id"] for r in recipe if r["run_id"] not in parents or r["run_id"] in used}
    kept = [r for r in results if is_eval(r) or r["run_id"] in keep]
    if select != "val":
        gone = len(results) - len(kept)
        return kept, [f"{gone} run{'s' if gone > 1 else ''} of `ltbench tune` trials left out (--select val shows "
                      "each study's best as its tuned row)"] if gone else []
    return kept + tuned_records(studies, runs, root), []


def _at_defaults(r: dict[str, Any], keys: set[str]) -> bool:
    """The run has its method's own values of ``keys`` (a recipe run that a trial met too)."""
    from ..spec.run_spec import non_defaults

    changed = non_defaults(r["spec"])
    return not any(k in changed for k in keys)


def tuned_records(studies: list[StudySummary], runs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Copies of the runs of each study's best configuration (any seed), as its tuned row."""
    from ..results.tables import _config_key

    by_id = {r["run_id"]: r for r in runs}
    best = {s.name: by_id.get(s.best.run_id or "") for s in studies if s.best is not None}
    per_row: dict[tuple[str, str], int] = {}
    for s in studies:
        if best.get(s.name) is not None:
            per_row[(s.method, best[s.name]["label"])] = per_row.get((s.method, best[s.name]["label"]), 0) + 1
    out: list[dict[str, Any]] = []
    seconds = run_seconds(root)
    for s in studies:
        r = best.get(s.name)
        if r is None:
            continue
        row = f"{s.method} (tuned)" if per_row[(s.method, r["label"])] == 1 else f"{s.method} (tuned, {s.name})"
        info = {"study": s.name, "trials": s.count("complete", "pruned", "failed"), "pruned": s.count("pruned"),
                "failed": s.count("failed"), "how": s.how(), "values": " ".join(s.best.sets),
                "device_s": study_seconds(s, seconds)}
        key = _config_key(r)
        out += [{**x, "table_row": row, "tuned": info} for x in runs if _config_key(x) == key]
    return out


def run_seconds(root: Path) -> dict[str, tuple[float, str | None]]:
    """Run id -> (device seconds it took, its stage-1 run id): a finished run's recorded train and final
    evaluation time, an unfinished (pruned, killed) run's epochs (metrics.jsonl time_s)."""
    from ..errors import DamagedRecord
    from ..results.store import Store
    from ..spec.run_spec import RunSpec

    out: dict[str, tuple[float, str | None]] = {}
    for rd in Store(root).runs():
        try:
            spec = rd.spec()
            parent = RunSpec.from_json(spec["parent"]).run_id if spec.get("parent") else None
            if rd.is_done():
                t = rd.result().get("timings", {})
                out[rd.run_id] = (float(t.get("train_s", 0)) + float(t.get("final_eval_s", 0)), parent)
            else:
                out[rd.run_id] = (sum(float(m.get("time_s") or 0) for m in rd.metrics()), parent)
        except (DamagedRecord, ValueError, TypeError):
            continue
    return out


def study_seconds(s: StudySummary, seconds: dict[str, tuple[float, str | None]]) -> float:
    """The device time of a study's runs: every trial's run and the stage-1 runs they built on, each once."""
    ids = {t.run_id for t in s.trials if t.run_id}
    ids |= {seconds[i][1] for i in ids if i in seconds and seconds[i][1]}
    return sum(seconds[i][0] for i in ids if i in seconds)
