"""`ltbench eval` and `ltbench export`.

`ltbench eval RUN_ID --dataset NAME [--split test|val|train] [data options]` scores the reported model
(model.pt) of a finished run on a split of another benchmark instance (another imbalance ratio, an
image folder with the same classes, ...) and keeps the scores as a record of its own:

    <results>/evals/<benchmark>/<eval_id>/  spec.json  result.json  DONE (written last, atomically)

The eval id is the sha256 (first 12 hex digits) of the canonical JSON of its spec: kind "eval", the
source run id and the sha256 of its model.pt, the benchmark, its data parameters and the split; so the
same evaluation is the same record, and retraining the run (another model.pt) makes a new one.
Accuracies are ``accuracy_report``'s; many / medium / few group the classes by the *source run's*
training counts and shot rule (what the model saw), not by the evaluated instance's. `ltbench table`
shows each record as a row "METHOD (eval of RUN_ID)" in the column of the evaluated instance.

`ltbench export RUN_ID [--format csv|jsonl] [-o FILE [--force]]` writes a run's per-epoch metrics (the
columns of ltbench.results.logs.CSV_COLUMNS), also for runs that predate metrics.csv. -o never names a
file inside a results store's records (``export_target``), and replaces an existing file only with --force.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ..errors import LtbenchError
from .common import (
    DEFAULT_RESULTS,
    DataRoot,
    Device,
    Download,
    ImbalanceSel,
    Results,
    SplitRoot,
    err,
    user_errors,
)

if TYPE_CHECKING:
    import torch

    from ..data.splits import ShotRule, TrainSplits
    from ..method import Method, StageContext
    from ..results.store import RunDir, Store

EVAL_PROTOCOL = 1
SPLITS = ("test", "val", "train")


# --- what is evaluated --------------------------------------------------------------------------

def source_run(store: Store, run_id: str) -> tuple[RunDir, dict[str, Any], dict[str, Any]]:
    """The finished run that ``run_id`` (a prefix) names: its directory, result.json and spec.json."""
    rd = store.find(run_id)
    if not rd.is_done():
        raise LtbenchError(f"run {rd.run_id} is not finished ({rd.state()}); finish it first (`ltbench status`).")
    problem = rd.record_damage()
    if problem is not None:
        raise LtbenchError(str(problem))
    if not rd.model_file.exists():
        raise LtbenchError(f"run {rd.run_id} has no model.pt (a record of an older ltbench); rerun it with "
                           "`ltbench run ... --force` to keep its model.")
    return rd, rd.result(), rd.spec()


def eval_data(benchmark: str, imbalance: float | None, sets: list[str], source_spec: dict[str, Any],
              data_root: Path, split_root: Path | None = None) -> dict[str, Any]:
    """The data parameters of the evaluated instance: the source run's when it is the same benchmark,
    else the benchmark's defaults; then what identifies the data under ``data_root``
    (``Benchmark.data_params``, e.g. an image folder's fingerprint), --imbalance and --set
    [data.]KEY=VALUE (typed like the default)."""
    from ..registry import benchmarks
    from ..spec.run_spec import coerce, parse_sets
    from ..spec.schema import SINCE

    b = benchmarks.get(benchmark)()
    data = dict(source_spec["data"]) if benchmark == source_spec["benchmark"] else {}
    data = {**b.params, **data, **b.data_params(Path(data_root), split_root)}
    if imbalance is not None:
        if "imbalance" not in data:
            raise LtbenchError(f"--imbalance: benchmark {benchmark!r} has no imbalance ratio parameter.")
        data["imbalance"] = imbalance
    for o in parse_sets(sets):
        if o.stage not in (None, "data") or o.key not in {**SINCE, **data}:
            raise LtbenchError(f"--set {o.item!r}: `ltbench eval` takes the data settings of {benchmark} only "
                               f"({', '.join(f'data.{k}' for k in data) or 'it has none'}).")
        default = b.params.get(o.key, data.get(o.key, SINCE.get(o.key)))
        data[o.key] = coerce(f"data.{o.key}", o.value, default)
    if "imbalance" in b.params:
        data["imbalance"] = coerce("data.imbalance", data["imbalance"], b.params["imbalance"])
    b.check_params(data)
    return data


def eval_spec(source: RunDir, model_sha256: str, benchmark: str, data: dict[str, Any], split: str) -> dict[str, Any]:
    """The spec of an eval record with its id: sha256 of the canonical JSON (data keys of
    schema.SINCE at their default left out, as in run ids)."""
    from ..spec.schema import hashed as hashed_values

    hashed = hashed_values(data)
    spec = {"kind": "eval", "protocol": EVAL_PROTOCOL, "source_run": source.run_id,
            "source_model_sha256": model_sha256, "benchmark": benchmark, "data": hashed, "split": split}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return {**spec, "data": data, "eval_id": hashlib.sha256(text.encode()).hexdigest()[:12]}


# --- checks and scoring ---------------------------------------------------------------------------

def class_names(obj: Any, info: dict[str, Any] | None = None) -> list[str] | None:
    """Class names where a benchmark or its splits say them (attribute ``class_names``, or
    ``info["class_names"]`` / ``info["classes"]`` (the image folder's) as recorded in result.json's
    data_info); None where unknown."""
    info = info or {}
    names = getattr(obj, "class_names", None) or info.get("class_names") or info.get("classes")
    return [str(n) for n in names] if names else None


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "")


def check_same_classes(run: str, theirs: list[str] | None, n_theirs: int, where: str, ours: list[str] | None,
                       n_ours: int) -> None:
    """Refuse to score a model on data whose label i is not the model's class i: names differ (both
    known: in content or order), else counts differ; the error names the classes (or the counts)."""
    if theirs is not None and ours is not None:
        if theirs == ours:
            return
        only_run = [c for c in theirs if c not in set(ours)]
        only_data = [c for c in ours if c not in set(theirs)]
        if not only_run and not only_data:
            moved = [f"{i}: {a} / {b}" for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b]
            raise LtbenchError(f"{where} has the classes of run {run} in another order (label: run's class / "
                               f"{where}'s class) {_few(moved)}; the labels would mean other classes.")
        parts = [f"only in run {run}'s classes: {_few(only_run)}" if only_run else "",
                 f"only in {where}: {_few(only_data)}" if only_data else ""]
        raise LtbenchError(f"{where} does not have the classes that run {run} was trained on ("
                           + "; ".join(p for p in parts if p) + "); evaluate on data with the same classes.")
    if n_theirs != n_ours:
        raise LtbenchError(f"run {run}'s model has {n_theirs} classes, {where} has {n_ours} (class names unknown "
                           "on one side, so only the counts are compared); evaluate on data with the same classes.")


def shot_rule_of(result: dict[str, Any], fallback: ShotRule) -> ShotRule:
    """The source run's many/medium/few rule from its record ("n > 50", "n < 15"); ``fallback`` (the
    evaluated benchmark's rule) where the record does not say it in that form."""
    from ..data.splits import ShotRule

    d = result.get("shot_rule") or {}
    try:
        return ShotRule(int(str(d["many"]).split(">")[1]), int(str(d["few"]).split("<")[1]), str(d.get("name", "")))
    except (KeyError, IndexError, ValueError):
        return fallback


def load_model(rd: RunDir, spec: dict[str, Any], result: dict[str, Any], splits: TrainSplits,
               device: torch.device) -> torch.nn.Module:
    """The run's reported model (``run_model``, through its method's ``report_model``: e.g. LIFT's test-time
    ensembling, which reads the splits of ``report_splits``)."""
    model, method, ctx = run_model(rd, spec, result, splits, device)
    return method.report_model(model, ctx)


def run_model(rd: RunDir, spec: dict[str, Any], result: dict[str, Any], splits: TrainSplits,
              device: torch.device) -> tuple[torch.nn.Module, Method, StageContext]:
    """The run's model on ``device``: its backbone, shaped by its method's ``prepare`` of every stage (as the
    engine does before training: LWS's scaled classifier, LDAM's cosine one), with model.pt loaded (checked
    against its recorded sha256); and its method and last stage's context (for ``report_model`` and
    ``report_splits``)."""
    import torch

    from ..method import StageContext
    from ..models.backbones import build_backbone
    from ..registry import benchmarks, methods
    from ..results.store import load_checked

    counts = result["class_counts"]
    model = build_backbone(spec["backbone"], len(counts), benchmarks.get(spec["benchmark"]).in_channels)
    from ..models.peft import insert_run
    from ..spec.run_spec import RunSpec

    insert_run(model, RunSpec.from_json(spec), len(counts))  # a tuned run's modules (VPT, LoRA, ...), as it trained
    method = methods.get(spec["method"])()
    for stage in method.stages:
        ctx = StageContext(stage=stage, hp=spec["stages"][stage], splits=splits, device=torch.device("cpu"),
                           num_classes=len(counts), class_counts=list(counts), restoring=True)
        method.prepare(model, ctx)
    state = load_checked(rd.model_file, f"rerun run {rd.run_id} with `ltbench run ... --force`")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise LtbenchError(f"{rd.model_file} does not fit the {spec['backbone']} model of {spec['method']} "
                           f"({str(exc).splitlines()[0][:200]}).") from None
    return model.to(device, memory_format=torch.channels_last), method, ctx


def at_input(splits: TrainSplits, model: torch.nn.Module, data: dict[str, Any],
             source_data: dict[str, Any]) -> TrainSplits:
    """The evaluated splits seen as the run's model saw its own test images (ltbench.data.resolution: a
    pretrained backbone's size and mean/std, LIFT's test view): the input settings (schema.DATA) of the
    evaluated data where given (--set data.resolution=N), else the source run's."""
    from ..data.resolution import at_backbone_input
    from ..spec.schema import DATA_BY_KEY

    inputs = {k: data.get(k, source_data.get(k, s.default)) for k, s in DATA_BY_KEY.items()}
    return at_backbone_input(splits, model, inputs)[0]


def score(rd: RunDir, spec: dict[str, Any], result: dict[str, Any], benchmark: str, data: dict[str, Any],
          split: str, opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the evaluated instance, check its classes against the run's, and score the run's model on
    its ``split``: (the accuracy report, facts for the record)."""
    from ..engine.environment import environment, resolve_device
    from ..engine.evaluation import accuracy_report, classifier_norms, predict
    from ..registry import benchmarks

    t0 = time.time()
    bench = benchmarks.get(benchmark)()
    device = resolve_device(opts["device"])
    splits = bench.load(data, Path(opts["data_root"]), opts["download"], opts["split_root"])
    where = f"{bench.label(data)} ({benchmark})"
    source_bench = benchmarks.get(spec["benchmark"])
    check_same_classes(rd.run_id, class_names(source_bench, result.get("data_info")), len(result["class_counts"]),
                       where, class_names(splits, getattr(splits, "info", None)) or class_names(bench),
                       splits.num_classes)
    if source_bench.in_channels != bench.in_channels:
        raise LtbenchError(f"run {rd.run_id}'s model reads {source_bench.in_channels}-channel images, {where} has "
                           f"{bench.in_channels}-channel ones.")
    if len(getattr(splits, split)) == 0:
        raise LtbenchError(f"{where} has no images in its {split} split; choose another with --split.")
    model, method, ctx = run_model(rd, spec, result, splits, device)
    splits = at_input(splits, model, data, spec["data"])  # the bare model's input (a pretrained backbone's size)
    # scored as the run's final report scored it (e.g. LIFT's test-time ensembling of each image's crops)
    model, splits = method.report_model(model, ctx), method.report_splits(splits, ctx)
    bs = 1024 if device.type == "cuda" else 256
    try:
        logits, y = predict(model, splits, split, device, batch_size=bs)
    except RuntimeError as exc:
        raise LtbenchError(f"run {rd.run_id}'s {spec['backbone']} model cannot read the images of {where}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    rule = shot_rule_of(result, splits.shot_rule)
    report = accuracy_report(logits, y, list(result["class_counts"]), rule)
    facts = {"shot_rule": rule.describe(), "groups": {k: len(v) for k, v in rule.groups(result["class_counts"]).items()},
             "classifier_norms": classifier_norms(model), "data_info": getattr(splits, "info", {}),
             "env": environment(device), "timings": {"eval_s": time.time() - t0}}
    return report, facts


def write_record(store: Store, espec: dict[str, Any], record: dict[str, Any]) -> RunDir:
    """The eval record's directory: spec.json, result.json, then DONE; each written atomically."""
    from ..files import atomic_write_bytes, atomic_write_json

    ed = store.eval_dir(espec["benchmark"], espec["eval_id"])
    try:
        ed.path.mkdir(parents=True, exist_ok=True)
        ed.done_file.unlink(missing_ok=True)
        atomic_write_json(ed.spec_file, espec)
        atomic_write_json(ed.result_file, record)
        atomic_write_bytes(ed.done_file, f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    except OSError as exc:
        raise LtbenchError(f"cannot write the eval record {ed.path} ({exc.strerror}); pass a writable "
                           "--results directory.") from None
    return ed


def run_eval(store: Store, run_id: str, benchmark: str, split: str, opts: dict[str, Any], force: bool = False,
             imbalance: float | None = None, sets: list[str] | None = None) -> tuple[dict[str, Any], bool]:
    """Evaluate (or find the finished record of) run ``run_id`` on ``benchmark``'s ``split`` (data options
    as ``eval_data`` takes them; ``opts``: device, data_root, download, split_root): (the record, whether
    it was computed now)."""
    from ..registry import benchmarks

    if split not in SPLITS:
        raise LtbenchError(f"--split {split!r}: expected one of {', '.join(SPLITS)}.")
    rd, result, spec = source_run(store, run_id)
    data = eval_data(benchmark, imbalance, sets or [], spec, Path(opts["data_root"]), opts["split_root"])
    model_sha256, problem = rd.model_sha256()
    if problem is not None:  # e.g. another run's model.pt and its .sha256 copied in: never scored as this run's
        raise LtbenchError(f"{rd.model_file} is {problem}; put run {rd.run_id}'s own model.pt back, or retrain the "
                           "run with `ltbench run ... --force` (its selectors).")
    espec = eval_spec(rd, model_sha256, benchmark, data, split)
    ed = store.eval_dir(benchmark, espec["eval_id"])
    if ed.is_done() and not force:
        try:
            return json.loads(ed.result_file.read_text()), False
        except (OSError, ValueError):
            pass  # damaged: computed again
    report, facts = score(rd, spec, result, benchmark, data, split, opts)
    label = benchmarks.get(benchmark)().label(data) + ("" if split == "test" else f" ({split})")
    record = {"kind": "eval", "eval_id": espec["eval_id"], "spec": espec, "source_run": rd.run_id,
              "source_seed": result["seed"], "source_label": result["label"], "source_benchmark": result["benchmark"],
              "method": result["method"], "backbone": result["backbone"], "recipe": result["recipe"],
              "benchmark": benchmark, "label": label, "split": split, "data": data,
              "model_sha256": espec["source_model_sha256"], "scores": report,
              "class_counts": list(result["class_counts"]), **facts}
    write_record(store, espec, record)
    return record, True


# --- the commands ---------------------------------------------------------------------------------

def _summary(record: dict[str, Any]) -> str:
    s = record["scores"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    return (f"top-1 {pct(s['top1'])}, class-mean {pct(s['class_mean'])}, many/medium/few {pct(s['many'])} / "
            f"{pct(s['medium'])} / {pct(s['few'])} ({s['n_images']} images)")


@user_errors
def eval_(
    run_id: str = typer.Argument(..., help="the finished run whose model is scored (an id or a prefix)"),
    benchmark: str = typer.Option(..., "--dataset", "-d", help="the benchmark to score on (same classes)"),
    split: str = typer.Option("test", "--split", help="test | val | train"),
    imbalance: ImbalanceSel = None,
    set_: list[str] = typer.Option([], "--set", metavar="data.KEY=VALUE", help="a data setting of the benchmark "  # noqa: B006
                                   "(repeatable), e.g. data.imbalance=50"),
    data_root: DataRoot = Path("data"), split_root: SplitRoot = None, results: Results = DEFAULT_RESULTS,
    device: Device = "auto", download: Download = True,
    force: bool = typer.Option(False, "--force", help="compute again even when the record exists"),
) -> None:
    """Score a finished run's model on a split of another benchmark instance with the same classes
    (another imbalance ratio, an image folder, ...); the scores are kept as a record of their own
    (results/evals/), which `ltbench table` shows as a row "METHOD (eval of RUN)"."""
    from ..results.store import Store

    store = Store(results)
    opts = {"device": device, "data_root": data_root, "download": download, "split_root": split_root}
    record, new = run_eval(store, run_id, benchmark, split, opts, force, imbalance, set_)
    ed = store.eval_dir(record["benchmark"], record["eval_id"])
    state = "new" if new else "done, skipped (--force computes it again)"
    err.print(f"eval {record['eval_id']} of run {record['source_run']} ({escape(record['method'])} on "
              f"{escape(record['source_label'])}) on {escape(record['label'])}: {state}", highlight=False)
    print(f"{record['method']} (eval of {record['source_run']}) on {record['label']}: {_summary(record)}")
    err.print(f"  -> {escape(str(ed.path))}; `ltbench table --results {escape(str(results))}` shows it",
              highlight=False)


def export_target(store: Store, output: Path, force: bool) -> Path:
    """Where `export -o OUTPUT` may write: never a file of a results store's records (the store's
    runs/, evals/ and jobs/, or any folder holding a run's spec.json: a run's metrics.jsonl replaced by
    CSV is a lost log), judged on the resolved path so that symlinks and `..` cannot get around it;
    an existing file only with --force. Returns the resolved path."""
    from ..results.store import EVALS

    if output.exists() and not output.is_file() and not output.is_dir():
        return output  # a FIFO, a terminal, /dev/stdout: no record is a device
    target = output.resolve()
    root = store.root.resolve()
    for folder in ("runs", EVALS, "jobs"):
        if target.is_relative_to(root / folder):
            raise LtbenchError(f"-o {output}: {target} is inside the results store's {root / folder}, whose files "
                               "are its records; write the export elsewhere, e.g. -o metrics.csv.")
    for folder in target.parents:
        if (folder / "spec.json").is_file() and (folder.parent.parent.parent.name == "runs"
                                                 or folder.parent.parent.name == EVALS):
            raise LtbenchError(f"-o {output}: {target} is inside the run folder {folder}, whose files are its "
                               "record; write the export elsewhere, e.g. -o metrics.csv.")
    if target.is_dir():
        raise LtbenchError(f"-o {output}: {target} is a folder; name a file, e.g. -o {output / 'metrics.csv'}.")
    if target.is_file() and not force:
        raise LtbenchError(f"-o {output}: {target} exists; pass --force to replace it, or name another file.")
    if not target.parent.is_dir():
        raise LtbenchError(f"-o {output}: the folder {target.parent} does not exist; create it or name a file in "
                           "an existing folder.")
    return target


def write_export(target: Path, output: Path, text: str) -> None:
    """Write the export: a regular file atomically (a failure leaves the old one whole), anything else
    (a FIFO, /dev/stdout) as it is."""
    from ..files import atomic_write_bytes

    try:
        if target.exists() and not target.is_file():  # a device, a FIFO: written as it is
            with open(target, "w") as f:
                f.write(text)
        else:
            atomic_write_bytes(target, text.encode())
    except OSError as exc:
        raise LtbenchError(f"-o {output}: cannot write it ({exc.strerror}); name a writable file.") from None


@user_errors
def export(
    run_id: str = typer.Argument(..., help="the run (an id or a prefix)"),
    fmt: str = typer.Option("csv", "--format", help="csv | jsonl"),
    output: Path | None = typer.Option(None, "-o", "--output", help="file to write (default: standard output)"),
    results: Results = DEFAULT_RESULTS,
    force: bool = typer.Option(False, "--force", help="replace the -o file when it exists"),
) -> None:
    """A run's per-epoch metrics: CSV with the columns epoch, stage, loss, lr, train_acc, val_class_mean,
    val_many, val_medium, val_few, test_top1, time_s (empty where unknown), or metrics.jsonl's lines."""
    from ..results.logs import metrics_csv
    from ..results.store import Store

    if fmt not in ("csv", "jsonl"):
        raise LtbenchError(f"--format {fmt!r}: expected csv or jsonl.")
    store = Store(results)
    rd = store.find(run_id)
    target = None if output is None else export_target(store, output, force)
    rows = rd.metrics()
    if not rows:
        raise LtbenchError(f"run {rd.run_id} has no per-epoch metrics yet (a post-hoc method trains no epochs; "
                           "a new run has none until its first epoch ends).")
    text = metrics_csv(rows) if fmt == "csv" else "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if target is None:
        if sys.stdout is None:  # `>&-`
            raise LtbenchError("standard output is closed; pass -o FILE, or leave stdout open.")
        sys.stdout.write(text)
        sys.stdout.flush()  # a write error is this command's, not one at exit
        return
    write_export(target, output, text)
    err.print(f"wrote {escape(str(output))} ({len(rows)} epochs)", highlight=False)
