"""The one front door: what `ltbench run`, `ltbench sweep` and ``ltbench.run`` are asked, as one
``RunRequest``, and the planner that turns it into run specs and checks, before anything is written,
everything a run would refuse.

The command line builds a request from its options (typer has typed them); the Python API builds one
from keyword arguments, each checked against the request's field types (a wrong type is one
LtbenchError naming the argument, never a bare TypeError, and never after a record was written).
No torch here: it comes with what trains.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.benchmark import DEFAULT_BENCHMARK
from ..errors import LtbenchError
from ..results import DEFAULT_RESULTS

if TYPE_CHECKING:
    from ..engine.training import RunOptions
    from ..launch.jobs import LaunchOptions
    from ..launch.sweep import Point
    from ..results.store import Store
    from .run_spec import Override, RunSpec


Names = str | list[str] | tuple[str, ...] | None
Seeds = int | str | list[int] | tuple[int, ...] | None


# ------------------------------------------------------------------------------ names, seeds, checks


def split_names(text: str | None, option: str | None = None) -> list[str]:
    """Comma-separated names; with ``option``, a value that names nothing (e.g. --method "") is an
    error rather than "the default"."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if option and text is not None and not names:
        raise LtbenchError(f"{option} {text!r}: names nothing; leave {option} out for the default, or name "
                           f"one or more, comma-separated (see `ltbench list`).")
    return names


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in split_names(text)] or [0]
    except ValueError:
        raise LtbenchError(f"--seed {text!r}: expected integers separated by commas, e.g. --seed 0,1,2.") from None


def builtin_methods() -> list[str]:
    """The methods `ltbench run` trains without --method: the built-ins of the default set
    (``Method.presentation.in_default_run``)."""
    from ..registry import methods

    return [e.name for e in methods.entries() if e.origin.startswith("builtin")
            and e.obj.presentation.in_default_run]


def every_method() -> list[str]:
    """What --method all names: every registered method, built-in or plugin, but those that run only by name
    (``Method.presentation.in_all`` false: zeroshot and lift, which need a foundation model's weights)."""
    from ..registry import methods

    return [e.name for e in methods.entries() if e.obj.presentation.in_all]


def known_names(benchmark: str | None, method: str | None) -> tuple[list[str], list[str]]:
    """The benchmarks and methods a filter names, each checked against its registry (an unknown name
    is an error with close matches, not an empty result)."""
    from ..registry import benchmarks, methods

    benchmark_names, method_names = split_names(benchmark, "--dataset"), split_names(method, "--method")
    for name in benchmark_names:
        benchmarks.get_entry(name)
    for name in method_names:
        methods.get_entry(name)
    return benchmark_names, method_names


def stage1_spec(store: Any, stage1: str | None) -> dict[str, Any] | None:
    """The spec.json of the finished run that --stage1 names (None without --stage1)."""
    if not stage1:
        return None
    rd = store.find(stage1)
    if not rd.is_done():
        raise LtbenchError(f"--stage1 {stage1}: run {rd.run_id} is not finished ({rd.state()}); finish it first.")
    return rd.spec()


def check_device(device: str, launcher: str) -> None:
    """Refuse a device this machine lacks before anything is written, when the runs will run here
    (inline or local jobs; a SLURM job's node may have what the submitting machine lacks)."""
    if launcher != "slurm":
        from ..engine.environment import resolve_device

        resolve_device(device)


def check_writable(results: Path, probe: bool = False) -> None:
    """Refuse a results root that cannot be written, before anything runs; creates nothing that stays.
    ``probe``: also make (and remove) a folder in its nearest existing folder, which tells what
    permissions cannot (/proc as root)."""
    existing = Path(results).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LtbenchError(f"--results {results}: {existing} is not a directory; pass a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LtbenchError(f"--results {results}: {existing} is not writable; pass a writable directory.")
    if probe:
        import tempfile

        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".ltbench-probe-"))
        except OSError as exc:
            raise LtbenchError(f"--results {results}: cannot write there ({exc.strerror or exc}); pass a writable "
                               "directory.") from None


# ------------------------------------------------------------------------------ the selection


@dataclass
class RunSelection:
    """What is selected: the command line's selectors merged with a config file (ltbench.spec.config),
    defaults filled in."""

    methods: list[str]
    benchmarks: list[str]
    seeds: list[int]
    backbone: str | None = None
    recipe: str | None = None
    imbalance: float | None = None
    epochs: int | None = None
    sets: list[str | Override] = field(default_factory=list)  # the config's first, then --set
    renamed: dict[str, str] = field(default_factory=dict)  # origin "--epochs" -> "config NAME", ...


def _names(value: Names, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return split_names(value, option)
    names = [str(v).strip() for v in value if str(v).strip()]
    if not names:
        raise LtbenchError(f"{option} {list(value)!r}: names nothing; leave it out for the default.")
    return names


def _seeds(value: Seeds) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_seeds(value)
    values = [value] if isinstance(value, int) else list(value)
    if not values or not all(type(v) is int for v in values):
        raise LtbenchError(f"seed {value!r}: expected an integer or a list of integers, e.g. seed=[0, 1, 2].")
    return values


def _sets(value: list[str] | tuple[str, ...] | dict[str, Any] | str | None) -> list[str]:
    """--set items: a list of "STAGE.KEY=VALUE" strings, or a dict {"STAGE.KEY": value} (a value is
    written as JSON, or as it is when a string, and parsed back as --set parses it)."""
    if value is None:
        return []
    if isinstance(value, dict):
        import json

        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    return list(value)


def make_selection(method: Names = None, dataset: Names = None, *, seed: Seeds = None, backbone: str | None = None,
                   recipe: str | None = None, imbalance: float | None = None, epochs: int | None = None,
                   sets: list[str] | dict[str, Any] | None = None, config: str | Path | None = None) -> RunSelection:
    """A config file's selectors and settings (if any), then the command line's (a given flag wins over
    the file, a --set over the file's value of its key), then the defaults (the built-in methods,
    digits_lt, seed 0)."""
    from .config import load_config, merged

    cfg = load_config(config) if config is not None else None
    flags = {"method": _names(method, "--method"), "dataset": _names(dataset, "--dataset"), "backbone": backbone,
             "recipe": recipe, "imbalance": imbalance, "seed": _seeds(seed), "epochs": epochs}
    chosen, renamed, from_file = merged(cfg, flags)
    names = chosen["method"]
    if names and "all" in names:  # --method all: every registered method (with any others named, once)
        names = list(dict.fromkeys(every_method() + [n for n in names if n != "all"]))
    return RunSelection(methods=names or builtin_methods(), benchmarks=chosen["dataset"] or [DEFAULT_BENCHMARK],
                     seeds=chosen["seed"] or [0], backbone=chosen["backbone"], recipe=chosen["recipe"],
                     imbalance=chosen["imbalance"], epochs=chosen["epochs"], sets=[*from_file, *_sets(sets)],
                     renamed=renamed)


# ------------------------------------------------------------------------------ the request

_PATH = (str, os.PathLike)
_NAMES = (str, list, tuple)
# The request's fields as the Python API takes them: (allowed types, what to say when it is wrong); None is
# allowed where the default is None.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "method": (_NAMES, "a name, 'a,b' or a list of names"), "dataset": (_NAMES, "a name, 'a,b' or a list of names"),
    "seed": ((int, str, list, tuple), "an integer, '0,1' or a list of integers"),
    "backbone": ((str,), "a backbone name"), "recipe": ((str,), "a recipe name"),
    "imbalance": ((int, float), "a number"), "epochs": ((int,), "an integer"),
    "sets": ((list, tuple, dict, str), "['STAGE.KEY=VALUE', ...] or {'STAGE.KEY': value}"),
    "grid": ((list, tuple), "['STAGE.KEY=V1,V2', ...]"), "config": (_PATH, "a file or a shipped config's name"),
    "stage1": ((str,), "a run id"), "init_weights": (_PATH, "a file"), "data_root": (_PATH, "a folder"),
    "split_root": (_PATH, "a folder"), "results": (_PATH, "a folder"), "device": ((str,), "auto, cpu or cuda[:N]"),
    "download": ((bool,), "True or False"), "force": ((bool,), "True or False"),
    "sync_bn": ((bool,), "True or False"), "compile": ((bool,), "True or False"),
    "keep_features": ((bool,), "True or False"), "test_every_epoch": ((bool,), "True or False"),
    "log": ((str, list, tuple), "'tensorboard', 'wandb', 'mlflow', 'a,b' or a list"), "progress": ((bool,), "True, False or None"),
    "retry_failed": ((bool,), "True or False"), "launch": ((dict,), "a dict of launch options"),
}


@dataclass
class RunRequest:
    """What a user asked: which runs (selectors, settings, seeds; a sweep's grid) and how to run them
    (paths, device, run options, launcher). Never part of a spec but through what it selects."""

    method: Names = None
    dataset: Names = None
    seed: Seeds = None
    backbone: str | None = None
    recipe: str | None = None
    imbalance: float | None = None
    epochs: int | None = None
    sets: list[str] | dict[str, Any] | str | None = None
    grid: list[str] = field(default_factory=list)
    config: str | Path | None = None
    stage1: str | None = None
    init_weights: Path | None = None
    data_root: Path | None = None  # None: $LTBENCH_DATA or ./data
    split_root: Path | None = None
    results: Path = DEFAULT_RESULTS
    device: str = "auto"
    download: bool = True
    force: bool = False
    sync_bn: bool = False
    compile: bool = False
    keep_features: bool = True
    test_every_epoch: bool = False
    log: str | list[str] | None = None
    progress: bool | None = None
    retry_failed: bool = False
    launch: dict[str, Any] = field(default_factory=dict)  # launcher and its options (ltbench.launch.jobs.LaunchOptions)

    def __post_init__(self) -> None:
        for name in ("init_weights", "data_root", "split_root", "results"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    @staticmethod
    def from_api(where: str, kwargs: dict[str, Any], sweep_only: tuple[str, ...] = ("grid", "retry_failed")) -> RunRequest:
        """A request from the Python API's keyword arguments, every one checked against its type first
        (``sweep_only``: fields `ltbench run` has not, refused as unknown arguments)."""
        for key in sweep_only:
            if key in kwargs:
                raise LtbenchError(f"{where}: no argument {key!r} (`ltbench sweep` has it; run takes one run per "
                                   "method, dataset and seed).")
        launch_fields = _launch_fields()
        plain = {k: v for k, v in kwargs.items() if k not in launch_fields}
        for key, value in plain.items():
            _check_type(where, key, value)
        launch = {k: v for k, v in kwargs.items() if k in launch_fields}
        for key, value in launch.items():
            _check_launch_type(where, key, value, launch_fields[key])
        return RunRequest(**plain, launch=launch)

    # --- what runs

    def selection(self) -> RunSelection:
        return make_selection(self.method, self.dataset, seed=self.seed, backbone=self.backbone, recipe=self.recipe,
                              imbalance=self.imbalance, epochs=self.epochs, sets=self.sets, config=self.config)

    def specs(self, store: Store) -> list[RunSpec]:
        """The runs, benchmark by benchmark, method by method, seed by seed (`ltbench run`'s order)."""
        from .config import relabel
        from .run_spec import resolve

        sel, parent = self.selection(), stage1_spec(store, self.stage1)
        return [relabel(resolve(m, d, backbone=sel.backbone, recipe=sel.recipe, imbalance=sel.imbalance,
                                epochs=sel.epochs, sets=sel.sets, seed=s, stage1_run=parent,
                                init_weights=self.init_weights, data_root=self.data_root_or_default,
                                split_root=self.split_root), sel.renamed)
                for d in sel.benchmarks for m in sel.methods for s in sel.seeds]

    def points(self, store: Store) -> list[Point]:
        """The runs with the grid values that made each, stage-1 runs listed once before their users
        (`ltbench sweep`'s plan, ltbench.launch.sweep.expand)."""
        from ..launch.sweep import expand
        from .config import relabel

        sel = self.selection()
        points = expand(sel.methods, sel.benchmarks, sel.seeds, self.grid, sets=sel.sets, backbone=sel.backbone,
                        recipe=sel.recipe, imbalance=sel.imbalance, epochs=sel.epochs,
                        stage1_run=stage1_spec(store, self.stage1), init_weights=self.init_weights,
                        data_root=self.data_root_or_default, split_root=self.split_root)
        for p in points:  # origins: "config NAME" for the selectors the file gave (the run ids stay)
            p.spec = relabel(p.spec, sel.renamed)
        return points

    # --- how it runs

    @property
    def data_root_or_default(self) -> Path:
        from ..data.benchmark import default_data_root

        return self.data_root if self.data_root is not None else default_data_root()

    def launch_options(self) -> LaunchOptions:
        from ..launch.dispatch import launch_options

        return launch_options(self.launch)

    def run_options(self) -> RunOptions:
        from ..engine.training import RunOptions
        from ..results.logs import parse_log

        log = ",".join(self.log) if isinstance(self.log, (list, tuple)) else self.log
        return RunOptions(data_root=self.data_root_or_default, device=self.device, download=self.download,
                          split_root=self.split_root, init_weights=self.init_weights, sync_bn=self.sync_bn,
                          backbone_weights=self.backbone_weights_file(),
                          compile=self.compile, keep_features=self.keep_features,
                          test_every_epoch=self.test_every_epoch, log=parse_log(log), live_progress=self.progress)

    def check(self, specs: list[RunSpec], launcher: str, dry_run: bool = False) -> None:
        """What every run would refuse before training, checked before anything is written (also by
        --dry-run): the launch options, the device, the results folder, the loggers, the data of every
        benchmark and the backbone each method needs."""
        from ..launch.dispatch import check_options
        from ..results.logs import check_available, parse_log

        check_options(self.launch_options(), dry_run=dry_run)
        check_device(self.device, launcher)
        check_writable(self.results, probe=not dry_run)
        log = ",".join(self.log) if isinstance(self.log, (list, tuple)) else self.log
        check_available(parse_log(log))
        check_specs(specs, self.data_root_or_default, self.split_root, self.download, self.backbone_weights_file(),
                    dry_run)

    def backbone_weights_file(self) -> Path | None:
        """The file of --set backbone.weights=FILE (from the command line, a config file or the API), if any."""
        from .run_spec import backbone_weights_file

        return backbone_weights_file(self.selection().sets)


def check_specs(specs: list[RunSpec], data_root: Path, split_root: Path | None, download: bool,
                weights: Path | None = None, dry_run: bool = False) -> None:
    """Each benchmark's data (once per benchmark and data), each method's backbone requirements, and the
    backbone itself (ltbench.models.pretrained: its library, its weights, the tuning of each stage)."""
    import json

    from ..registry import benchmarks, methods

    seen: set[str] = set()
    for spec in specs:
        key = json.dumps([spec.benchmark, spec.data], sort_keys=True)
        if key not in seen:
            seen.add(key)
            benchmarks.get(spec.benchmark)().check_data(spec.data, Path(data_root), download, split_root)
        for problem in methods.get(spec.method)().backbone_problems(spec.backbone):
            raise LtbenchError(problem)
        if methods.get(spec.method)().needs_class_names(spec):
            _check_class_names(spec, Path(data_root), split_root)
        from ..models.pretrained import backbone_problems

        for problem in backbone_problems(spec, weights, download, dry_run):
            raise LtbenchError(f"{spec.method} on {spec.backbone}: {problem}.")


def _check_class_names(spec: RunSpec, data_root: Path, split_root: Path | None) -> None:
    """A method that reads class names (CLIP text features) on data that is here but gives none: one line.
    Data still to be downloaded is checked by the run itself, once it is here."""
    from ..data.benchmark import class_names_missing
    from ..registry import benchmarks

    bench = benchmarks.get(spec.benchmark)()
    try:
        bench.check_data(spec.data, data_root, False, split_root)
    except LtbenchError:
        return
    if bench.read_class_names(spec.data, data_root, split_root) is None:
        raise LtbenchError(class_names_missing(bench, spec.data, data_root, spec.method))


def _launch_fields() -> dict[str, Any]:
    from ..launch.jobs import LaunchOptions

    return {f.name: f for f in dataclasses.fields(LaunchOptions)}


def _check_type(where: str, key: str, value: Any) -> None:
    if key not in _TYPES:
        from .schema import did_you_mean

        known = sorted({*_TYPES, *_launch_fields()} - {"launch", "sets", "grid", "retry_failed"}) + ["set"]
        raise LtbenchError(f"{where}: no argument {key!r}{did_you_mean(key, known)}; it takes "
                           f"{', '.join(known)}.")
    if value is None and key not in ("download", "force", "sync_bn", "compile", "keep_features",
                                     "test_every_epoch", "retry_failed", "results", "device"):
        return
    types, want = _TYPES[key]
    wrong = isinstance(value, bool) and bool not in types or not isinstance(value, types)
    if not wrong and isinstance(value, float) and not math.isfinite(value):
        wrong = True
    if wrong:
        shown = {"sets": "set"}.get(key, key)
        raise LtbenchError(f"{where}({shown}={value!r}): expected {want}, not {type(value).__name__}.")


def _check_launch_type(where: str, key: str, value: Any, f: Any) -> None:
    if value is None:
        return
    kind = str(f.type)
    ok = (isinstance(value, str) if "str" in kind and "list" not in kind else
          isinstance(value, list) and all(isinstance(v, str) for v in value) if "list" in kind else
          isinstance(value, (int, float)) and not isinstance(value, bool) if "float" in kind else
          isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise LtbenchError(f"{where}({key}={value!r}): expected {kind.replace(' | None', '')}, "
                           f"not {type(value).__name__}.")
