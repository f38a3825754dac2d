"""The engine: owns the training loop of a stage and the life of a run in the store.

Methods only plug in through the hooks of ``ltbench.method.Method``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from ..data.benchmark import class_names_missing, default_data_root
from ..data.resolution import at_backbone_input
from ..data.splits import TrainSplits, per_epoch_generator, to_device
from ..errors import LtbenchError
from ..files import file_sha256, recorded_sha256
from ..method import Method, StageContext
from ..models import peft
from ..models.backbones import LTModel, check_initial_weights, load_initial_weights
from ..models.pretrained import build_run_model, locate_run_weights, param_extra
from ..progress import EpochProgress, console
from ..registry import benchmarks, methods
from ..results.loggers import Logs, log_final, open_logs
from ..results.logs import write_metrics_csv
from ..results.store import RunDir, Store, atomic_write_json, load_checked
from ..spec.inputs import caches_features, default_note, frozen_backbone, is_pretrained
from ..spec.run_spec import RunSpec
from ..spec.schema import DATA_BY_KEY
from . import distributed
from .distributed import SINGLE, Dist
from .environment import environment, resolve_device
from .evaluation import (
    accuracy_report,
    autocast,
    classifier_norms,
    extract_features,
    feature_key,
    load_features,
    predict,
    save_features,
    to_memory_format,
    top5_and_confusion,
)
from .schedule import effective_lr, lr_factor
from .stage_options import StageOptions


@dataclass
class RunOptions:
    """How to run (never part of a spec): where the data is, which device, progress display."""

    data_root: Path = field(default_factory=default_data_root)
    split_root: Path | None = None  # split-file benchmarks: where the split lists are (default: data_root)
    init_weights: Path | None = None  # initial backbone weights; their sha256 is part of the spec
    backbone_weights: Path | None = None  # --set backbone.weights=FILE of a pretrained backbone (sha256 in the spec)
    device: str = "auto"
    download: bool = True
    live_progress: bool | None = None  # None: rich bars when stderr is a terminal
    eval_batch_size: int | None = None  # None: 1024 on CUDA, 256 on the CPU (where larger batches run slower)
    extra_env: dict[str, Any] = field(default_factory=dict)
    sync_bn: bool = False  # several CUDA ranks: SyncBatchNorm instead of per-rank BatchNorm (recorded)
    keep_features: bool = True  # frozen backbones' features kept on disk and shared (stage-1 runs, <results>/features)
    compile: bool = False  # torch.compile the trained module (recorded in env; pays off on GPUs, long runs)
    test_every_epoch: bool = False  # evaluate the test set after every epoch (metrics.jsonl), not only at the end
    log: tuple[str, ...] = ()  # loggers besides metrics.jsonl/.csv: tensorboard, wandb, mlflow (ltbench.results.loggers)
    # called with (the run's RunDir, the epoch's metrics row) after each epoch's checkpoint; may raise Pruned
    # (`ltbench tune`'s pruning: ltbench.tune.worker)
    on_epoch: Callable[[RunDir, dict[str, Any]], None] | None = None


class NonFiniteLoss(Exception):
    pass


class Pruned(Exception):
    """Raised by ``RunOptions.on_epoch`` to stop a run after an epoch (a pruned `ltbench tune` trial): the run
    keeps its checkpoint and records PRUNED (``record``) instead of DONE, so `ltbench run` trains it on."""

    def __init__(self, record: dict[str, Any]):
        super().__init__(f"pruned after epoch {record.get('epoch')}")
        self.record = record


def _stage_steps(splits: TrainSplits, hp: dict[str, Any]) -> int:
    n = len(splits.train)
    full, rest = divmod(n, hp["batch_size"])
    return full + (1 if rest >= 2 else 0)


def _evaluate_for_selection(model: torch.nn.Module, splits: TrainSplits, device: torch.device, hp: dict[str, Any],
                            bs: int, test_every_epoch: bool) -> dict[str, float | None]:
    """The metrics.jsonl scores of an epoch: val class-mean accuracy (what selection reads) and val
    many/medium/few (``accuracy_report``; None without a validation set), and test top-1, only when
    selection reads it (select=test) or when asked (--test-every-epoch): the reported numbers come
    from the final report."""
    counts = splits.class_counts
    logits, y = predict(model, splits, "val", device, batch_size=bs)
    val = accuracy_report(logits, y, counts, splits.shot_rule) if len(y) else {}
    scores = {f"val_{k}": val.get(k) for k in ("class_mean", "many", "medium", "few")}
    scores["test_top1"] = None
    if hp["select"] == "test" or test_every_epoch:
        logits, y = predict(model, splits, "test", device, batch_size=bs)
        scores["test_top1"] = accuracy_report(logits, y, counts, splits.shot_rule)["top1"]
    return scores


@dataclass
class EpochSelection:
    """How a stage picks the weights it reports: the best epoch on ``val`` (class-mean accuracy) or on
    ``test`` (top-1; the papers' common practice, labelled), or the ``last`` epoch. ``best`` (epoch,
    score, weights) goes into every checkpoint."""

    rule: str
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "score": None, "state": None})

    def offer(self, model: torch.nn.Module, epoch: int, val: float | None, test: float | None) -> None:
        """After an epoch: keep its weights when they score best so far."""
        score = {"val": val, "test": test}.get(self.rule)
        if score is not None and (self.best["score"] is None or score > self.best["score"]):
            self.best = {"epoch": epoch + 1, "score": score,
                         "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}

    def finish(self, model: torch.nn.Module, splits: TrainSplits, device: torch.device, epochs: int,
               bs: int) -> dict[str, Any]:
        """Load the chosen weights into ``model``; the summary for result.json (with the last epoch's
        test numbers when another epoch was chosen, for tables that report the last epoch)."""
        if self.rule != "last" and self.best["state"] is not None:
            last_test = None
            if self.best["epoch"] != epochs:
                logits, y = predict(model, splits, "test", device, batch_size=bs)
                last_test = accuracy_report(logits, y, splits.class_counts, splits.shot_rule)
            model.load_state_dict(self.best["state"])
            selected = {"rule": self.rule, "epoch": self.best["epoch"], "score": self.best["score"],
                        "last_epoch_test": last_test}
        else:
            selected = {"rule": "last", "epoch": epochs, "score": None}
        if self.rule == "test":
            selected["warning"] = "checkpoint selected on the test set (the papers' common practice); not a clean protocol"
        return selected


def _optimizer(model: torch.nn.Module, method: Method, ctx: StageContext) -> tuple[torch.optim.SGD, float]:
    """SGD over the method's parameter groups at the stage's effective lr (the schedule scales each
    group's ``base_lr``); the effective peak lr."""
    hp = ctx.hp
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in method.param_groups(model, ctx)]
    peak = effective_lr(hp)  # (only trainable parameters: what the stage's tuning and the method froze stays out)
    for g in groups:
        g.setdefault("lr", hp["lr"])
        g["base_lr"] = g["lr"] * peak / hp["lr"]
    return torch.optim.SGD(groups, lr=peak, momentum=hp["momentum"], nesterov=hp["nesterov"]), peak


def _resume(model: torch.nn.Module, opt: torch.optim.Optimizer, ctx: StageContext, rd: RunDir, title: str,
            selection: EpochSelection) -> int:
    """Load this stage's checkpoint when the run directory has one; the epochs it holds (0 without)."""
    ck = rd.load_checkpoint()
    if ck is None or ck.get("stage") != ctx.stage:
        return 0
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    # the checkpoint loads on the CPU: its method-state tensors go where prepare() put them
    ctx.state.update(to_device(ck.get("method_state", {}), ctx.device))
    selection.best = ck["best"]
    console.print(f"[dim]{escape(title)}: resuming after epoch {ck['epoch']} from "
                  f"{escape(str(rd.checkpoint_file))}[/dim]")
    return ck["epoch"]


@dataclass
class EpochLoop:
    """What one epoch of a stage needs: the modules, the optimizer and the stage's settings."""

    net: torch.nn.Module  # what the steps run (DDP-wrapped and/or compiled ``model``)
    model: torch.nn.Module
    method: Method
    ctx: StageContext
    opt: torch.optim.Optimizer
    peak: float
    seed: int
    steps: int
    dist: Dist
    frozen: torch.nn.Module | None

    def run(self, epoch: int, bar: EpochProgress) -> dict[str, Any]:
        """Train one epoch; its loss, accuracy, lr and speed (raises NonFiniteLoss). The stage's options
        (ltbench.engine.stage_options) change only what they must: the sampler, the loss, the batch (mixing), the
        augmentation and a projection after the step or the epoch."""
        hp, device, opt, t0 = self.ctx.hp, self.ctx.device, self.opt, time.time()
        self.net.train()
        if self.frozen is not None and hp.frozen_bn == "eval":
            self.frozen.eval()  # else (the WB code) its BatchNorm normalises with batch statistics and updates its own
        amp = autocast(device) if hp.precision == "bf16" else contextlib.nullcontext()
        gen = per_epoch_generator(self.seed, epoch)
        tricks = self.ctx.options.epoch(epoch, gen, self.steps)  # mixing on: its seed is gen's first draw
        mixer, loss_fn = tricks.mixer, tricks.loss
        project = tricks.maxnorm.project if tricks.maxnorm is not None and tricks.maxnorm.every == "step" else None
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        seen, lr = 0, self.peak
        batches = self.ctx.splits.train_batches(hp["batch_size"], tricks.sampler, gen, device, hp["augment"],
                                                **tricks.data_options)
        for i, (x, y) in enumerate(bar.timed(batches)):  # timed: the wait for each batch (data time)
            f = lr_factor(hp, epoch + i / self.steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f
            lr = self.peak * f
            if mixer is not None:  # the global batch mixed; y becomes (own, partner's) label pairs
                x, y = mixer.mix(i, x, y)
            part = distributed.shard(x, y, self.dist)  # this rank's slice of the global batch (all of it alone)
            if part is None:
                break
            x, y, share = part
            with amp:
                out = self.method.forward(self.net, to_memory_format(x, device), self.ctx)
            out = out.float() if isinstance(out, torch.Tensor) else out
            logits = self.method.logits(out)
            loss = loss_fn(out, y) if mixer is None else mixer.loss(loss_fn, out, y)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()  # share: world size x this rank's fraction of the batch (1 alone)
            opt.step()
            self.method.after_step(self.model, self.ctx)
            if project is not None:
                project(self.model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum() if mixer is None else mixer.hits(logits.detach(), y)
            seen += len(y)
            bar.step()
        loss_sum, correct, n_seen = distributed.sum_over_ranks(self.dist, loss_sum, correct,
                                                               torch.tensor(seen, device=device))
        seen = int(n_seen)
        mean_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"the training loss became {mean_loss} in epoch {epoch + 1} of stage "
                                f"{self.ctx.stage} (lr {hp['lr']:g}, weight decay {hp['weight_decay']:g})")
        self.method.after_epoch(self.model, self.ctx)
        if tricks.maxnorm is not None and tricks.maxnorm.every == "epoch":
            tricks.maxnorm.project(self.model)
        t_train = time.time() - t0
        return {"stage": self.ctx.stage, "epoch": epoch + 1, "loss": mean_loss, "lr": lr,
                "train_acc": 100.0 * float(correct) / max(seen, 1), "train_s": t_train,
                "images_per_s": seen / max(t_train, 1e-9)}


def train_stage(model: torch.nn.Module, method: Method, ctx: StageContext, rd: RunDir, seed: int,
                opts: RunOptions, title: str, frozen: torch.nn.Module | None = None,
                dist: Dist = SINGLE) -> dict[str, Any]:
    """Train one stage with per-epoch checkpoints; returns the selection summary. Resumes from the
    run directory's checkpoint when there is one. ``frozen`` (a part of ``model``) stays in eval mode
    (unless ``frozen_bn=train``). With several processes (``dist``) each trains on its shard of every
    global batch and only rank 0 writes; see ltbench.engine.distributed."""
    hp, splits, device = ctx.hp, ctx.splits, ctx.device
    if ctx.options is None:  # execute makes them as the stage starts; a stage trained directly, before its checkpoint
        ctx.options = StageOptions.start(method, ctx, model)
    opt, peak = _optimizer(model, method, ctx)
    selection = EpochSelection(hp["select"])
    start = _resume(model, opt, ctx, rd, title, selection)
    log = None
    if dist.is_main:  # drop metrics lines of epochs the checkpoint does not hold (killed before it was saved)
        rd.trim_metrics(ctx.stage, start)
        write_metrics_csv(rd)
        log = open_logs(opts.log, rd, ctx.stage, start)  # --log: TensorBoard keeps only the epochs the checkpoint holds
    net = distributed.wrap(model, dist, device)  # after the checkpoint: every rank starts from the same state
    if opts.compile:  # training forward/backward only; evaluation runs ``model`` eagerly (no recompiles)
        net = torch.compile(net)
    epochs, steps = hp["epochs"], _stage_steps(splits, hp)
    loop = EpochLoop(net, model, method, ctx, opt, peak, seed, steps, dist, frozen)
    bar = EpochProgress(title, epochs, steps, start, opts.live_progress, enabled=dist.is_main)
    try:
        for epoch in range(start, epochs):
            ctx.epoch = epoch
            t0 = time.time()
            bar.start_epoch(epoch)
            row = loop.run(epoch, bar)
            scores = _evaluate_for_selection(model, splits, device, hp, opts.eval_batch_size, opts.test_every_epoch)
            selection.offer(model, epoch, scores["val_class_mean"], scores["test_top1"])
            row.update(scores, time_s=time.time() - t0)
            if dist.is_main:
                _save_epoch(rd, ctx, model, opt, selection, row, log)
            bar.end_epoch(epoch, row)
            if opts.on_epoch is not None and dist.is_main:  # after the checkpoint: a Pruned run resumes from it
                opts.on_epoch(rd, row)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return selection.finish(model, splits, device, epochs, opts.eval_batch_size)


def _save_epoch(rd: RunDir, ctx: StageContext, model: torch.nn.Module, opt: torch.optim.Optimizer,
                selection: EpochSelection, row: dict[str, Any], log: Logs | None = None) -> None:
    """An epoch's loggers (``log``: --log), its metrics line and metrics.csv, then its checkpoint
    (what a resumed run starts from), then a heartbeat. Everything before the checkpoint is trimmed
    back to it when a run resumes."""
    if log is not None:
        head = getattr(model, "classifier", None)
        log.epoch(row, classifier_norms(model) if isinstance(getattr(head, "weight", None), torch.Tensor) else None)
    rd.append_metrics(row)
    write_metrics_csv(rd)
    rd.save_checkpoint({"stage": ctx.stage, "epoch": row["epoch"], "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "best": selection.best, "method_state": ctx.state})
    rd.heartbeat()


def final_report(model: LTModel, splits: TrainSplits, device: torch.device, bs: int) -> dict[str, Any]:
    """val and test reports (``accuracy_report``, plus top-5 on many classes and the test confusion:
    ``top5_and_confusion``), the flip-averaged test report where the benchmark flips, the norms."""
    counts = splits.class_counts
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        logits, y = predict(model, splits, split, device, batch_size=bs)
        out[split] = {**accuracy_report(logits, y, counts, splits.shot_rule),
                      **top5_and_confusion(logits, y, confusion=split == "test")}
    if splits.augment.flip:
        mirrored, _ = predict(model, splits, "test", device, mirrored=True, batch_size=bs)
        out["test_flip_avg"] = {**accuracy_report((logits + mirrored) / 2, y, counts, splits.shot_rule),
                                **top5_and_confusion((logits + mirrored) / 2, y)}
    else:
        out["test_flip_avg"] = None  # the benchmark does not flip images (e.g. digits)
    out["classifier_norms"] = classifier_norms(model)
    return out


def execute(spec: RunSpec, store: Store, opts: RunOptions, force: bool = False) -> dict[str, Any]:
    """Run a spec to completion (or skip it when done), returning its result record. Under torchrun or
    a submitit job of several tasks every rank calls it (same spec); rank 0 owns the run directory."""
    rd = store.run_dir(spec)
    if spec.parent is not None:  # stage 1 first: its own record, shared by every method built on it (and
        execute(spec.parent_spec(), store, opts)  # trained again if deleted under a finished stage-2 record)
    damaged = None
    if rd.is_done() and not force:
        damaged = finished_damage(rd)
        if damaged is None:
            return rd.result()
    bench = benchmarks.get(spec.benchmark)()
    method: Method = methods.get(spec.method)()
    dist = distributed.setup(opts.device)
    device = distributed.device_for(resolve_device(opts.device), dist)
    if opts.eval_batch_size is None:
        opts = dataclasses.replace(opts, eval_batch_size=1024 if device.type == "cuda" else 256)
    splits = bench.load(spec.data, Path(opts.data_root), opts.download, opts.split_root)  # before any record
    if spec.init is not None and spec.parent is None:
        check_initial_weights(opts.init_weights, spec.init)
    locate_run_weights(spec, opts.backbone_weights, opts.download)  # a pretrained backbone's weights: before any record
    names = _class_names(spec, bench, splits, opts)  # for the record, and for a method that reads them (CLIP text)
    if method.needs_class_names(spec) and names is None:
        raise LtbenchError(class_names_missing(bench, spec.data, Path(opts.data_root), spec.method))
    title = f"{spec.method}/{spec.benchmark}/{spec.run_id[:8]}"
    note = default_note(spec)  # imagefolder's pretrained backbone by default, and how to train from scratch
    if note and dist.is_main:
        console.print(f"[dim]{escape(note)}[/dim]", highlight=False, soft_wrap=True)
    with contextlib.ExitStack() as lock:
        distributed.on_rank0(dist, lambda: _claim(spec, store, rd, force, lock, damaged, method))
        try:
            result = _run(spec, rd, bench, method, splits, device, opts, title, store, dist, names)
        except Pruned as exc:  # stopped by its on_epoch (`ltbench tune`): kept with its checkpoint, not done
            if dist.is_main:
                atomic_write_json(rd.pruned_file, {**exc.record, "time": time.time()})
            raise
        except NonFiniteLoss as exc:  # the run is kept as failed, with this message (`ltbench status`)
            message = (f"{title}: {exc}; lower the learning rate (--set STAGE.lr=...) or check the data. The run "
                       "is recorded as failed (no result).")
            if dist.is_main:
                atomic_write_json(rd.failed_file, {"error": message, "time": time.time()})
            raise LtbenchError(message) from None
        except LtbenchError:
            if dist.is_main and not rd.checkpoint_file.exists():  # nothing of value yet: leave no record
                store.remove(rd)
            raise
        except KeyboardInterrupt:
            raise  # the checkpoint stays; the next launch resumes
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:  # a full disk, a read-only mount
                raise LtbenchError(f"{title}: cannot write {exc.filename or rd.path} ({exc.strerror}); free space "
                                   "(or make it writable) and run the same command again: the run resumes from its "
                                   "last checkpoint.") from None
            if dist.is_main:
                with contextlib.suppress(OSError):  # the error itself goes on, recorded or not
                    atomic_write_json(rd.failed_file, {"error": traceback.format_exc(), "time": time.time()})
            raise
    distributed.barrier(dist)  # the record is written before any rank goes on (e.g. to a stage 2 on it)
    return result


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # fixed by the user, then resumed


def finished_damage(rd: RunDir) -> str | None:
    """Why a finished run's record cannot be used as it is (None: it can): spec.json or result.json
    missing, unreadable or without what readers use (RunDir.record_damage); model.pt missing or not
    matching its recorded checksum."""
    problem = rd.spec_file_damage() or rd.record_damage()
    if problem is not None:
        return f"{problem.path.name} {problem.problem}"
    if "model_sha256" not in rd.result() and not rd.model_file.exists():
        return None  # a record of an older ltbench, which kept no model.pt
    _, problem = rd.model_sha256()  # also a model.pt copied in from another run
    return f"model.pt is {problem}" if problem else None


def _claim(spec: RunSpec, store: Store, rd: RunDir, force: bool, lock: contextlib.ExitStack,
           damaged: str | None = None, method: Method | None = None) -> None:
    """Create the run directory (replacing it with --force) and hold its lock until ``lock`` closes.
    ``damaged``: why this finished run's record cannot be used; it is redone from its checkpoint (the
    same numbers: selection and final report are functions of it) or, for a method that trains
    nothing, run again; otherwise the error names the directory to delete."""
    if force and rd.path.exists():
        if rd.lock_is_live():
            raise LtbenchError(f"run {rd.run_id} is running right now; --force cannot replace it.")
        store.remove(rd)
    store.create(spec)
    lock.enter_context(rd.locked())
    rd.failed_file.unlink(missing_ok=True)
    rd.pruned_file.unlink(missing_ok=True)  # a pruned trial's run trains on
    if damaged is not None and rd.is_done():
        trains = method is not None and any(method.trains(st) for st in method.stages)
        if trains and not rd.checkpoint_file.exists():
            raise LtbenchError(f"run {rd.run_id}: {damaged}, and it has no checkpoint.pt to redo its final report "
                               f"from; delete {rd.path} and run the same command again (it is trained anew).")
        console.print(f"{escape(rd.run_id)}: {escape(damaged)}; redoing its final report"
                      + (" from its last checkpoint" if trains else ""), highlight=False, soft_wrap=True)
        rd.done_file.unlink()
        rd.result_file.unlink(missing_ok=True)


class ClassifierHead(torch.nn.Module):
    """The classifier of a model alone, trained on cached features (shares its parameters)."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


FEATURES = "features"  # <results>/features/<backbone>/<key>.pt: a pretrained backbone's features, shared by its runs


def feature_data(data: dict[str, Any]) -> dict[str, Any]:
    """What ``feature_key`` hashes of a run's data settings: all but the input settings at their defaults
    (schema.DATA, which earlier specs did not hold), so that features kept before they existed still match."""
    return {k: v for k, v in data.items() if k not in DATA_BY_KEY or v != DATA_BY_KEY[k].since}


def feature_files(spec: RunSpec, store: Store, key: str) -> list[Path]:
    """Where the features of ``key`` are kept, the first being where they are written: the stage-1 run's
    ``features/`` folder (a stage-2 run: removed with that run), and for a pretrained backbone the store's
    ``features/<backbone>/`` folder, which every run on that backbone and data reads (a one-stage run's
    linear probe, and the stage 2 of a run whose stage 1 left the backbone frozen)."""
    files = []
    if spec.parent is not None:
        files.append(store.run_dir(spec.parent_spec()).path / FEATURES / f"{key}.pt")
    if is_pretrained(spec.backbone):
        files.append(store.root / FEATURES / spec.backbone.replace(":", "_") / f"{key}.pt")
    return files


def _stage_features(model: LTModel, spec: RunSpec, splits: TrainSplits, device: torch.device, opts: RunOptions,
                    store: Store, dist: Dist) -> tuple[Any, str, dict[str, Any]]:
    """The frozen backbone's features of train, val and test (the evaluation view: unaugmented) for a stage
    that trains its classifier on them (ltbench.spec.inputs.caches_features). They are kept on disk,
    content-addressed (``feature_key``; where: ``feature_files``), so that every later run on that backbone
    and data (other methods, a stage-2 sweep) reads them instead of running the backbone again; the record
    says which happened, and where they are kept."""
    t0 = time.time()
    key = feature_key(model.features, feature_data(spec.data), device, opts.eval_batch_size)
    files = feature_files(spec, store, key) if opts.keep_features else []
    how = "extracted"
    for file in files:
        if file.exists():
            feats, why = load_features(file, splits, device)
            if feats is not None:
                return feats, key, {"features": f"reused {key}", "features_file": str(file),
                                    "features_s": time.time() - t0}
            how = f"extracted again (the kept file {file.name} was {why})"
    feats = extract_features(model.features, splits, device, opts.eval_batch_size)
    kept = {}
    if files and dist.is_main:
        try:
            save_features(feats, files[0])
            kept = {"features_file": str(files[0])}
        except OSError as exc:  # only a lost speed-up: the run goes on with the features in memory
            console.print(f"[yellow]warning: could not keep the features in {escape(str(files[0]))} "
                          f"({escape(str(exc.strerror))})[/yellow]")
    return feats, key, {"features": how, **kept, "features_s": time.time() - t0}


def _run(spec: RunSpec, rd: RunDir, bench: Any, method: Method, splits: TrainSplits, device: torch.device,
         opts: RunOptions, title: str, store: Store, dist: Dist = SINGLE,
         names: list[str] | None = None) -> dict[str, Any]:
    torch.manual_seed(spec.seed)
    if device.type == "cuda":  # the fastest convolutions for training; evaluation and features pick
        torch.backends.cudnn.benchmark = True  # deterministic ones (ltbench.engine.evaluation.exact_arithmetic)
    model, records = _initial_model(spec, bench, splits, opts, store)
    splits = _at_input(splits, model, spec, records)  # a pretrained backbone's size and normalisation
    model = distributed.prepare_model(model, dist, opts.sync_bn, device)
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU and GPU
    t0 = time.time()
    selected: dict[str, Any] = {"rule": "none (no training stage)", "epoch": None, "score": None}
    counted = peft.ParamCount()
    feats, key = None, None  # features of the frozen backbone, once a stage has needed them
    for stage in method.stages:
        hp, trains, frozen = spec.stages[stage], method.trains(stage), method.frozen_features(stage)
        backbone_frozen = frozen_backbone(method, stage, hp, spec.backbone)  # also tuning=linear, pretrained
        ctx = StageContext(stage=stage, hp=hp, splits=splits, device=device, seed=spec.seed,
                           num_classes=splits.num_classes, class_counts=splits.class_counts, class_names=names)
        _prepare_stage(model, method, ctx, counted)
        if trains:  # what the optimizer used: the batch of all ranks together, the lr after scaling
            records.update({f"{stage}_global_batch": hp["batch_size"], f"{stage}_effective_lr": effective_lr(hp)})
            ctx.options = StageOptions.start(method, ctx, model)  # MaxNorm's radius from the classifier now
            options = ctx.options.record()
            if options:
                ctx.record[f"{stage}_tricks"] = options  # what result.json says of them
        if caches_features(method, stage, hp, spec.backbone):
            if feats is None:
                feats, key, how = _stage_features(model, spec, splits, device, opts, store, dist)
                records.update({f"{stage}_{k}": v for k, v in how.items()})
            ctx.features = feats
        if trains and ctx.features is not None:
            records[f"{stage}_path"] = "cached_features"
            ctx.splits = feats
            selected = train_stage(ClassifierHead(model.classifier), method, ctx, rd, spec.seed, opts, title,
                                   dist=dist)
            ctx.splits = splits
        elif trains:
            if backbone_frozen:
                bn = hp.frozen_bn
                records[f"{stage}_path"] = f"frozen_backbone_per_epoch (augment {str(hp['augment']).lower()}, " \
                                           f"BatchNorm in {bn} mode{', running statistics updated' if bn == 'train' else ''})"
            selected = train_stage(model, method, ctx, rd, spec.seed, opts, title,
                                   frozen=peft.frozen_part(model, hp, frozen), dist=dist)
        method.finalize(model, ctx)
        records.update(ctx.record)
    train_s = time.time() - t0
    t1 = time.time()
    reported, viewed = method.report_model(model, ctx), method.report_splits(splits, ctx)  # e.g. LIFT's tte
    if feats is not None and reported is model and viewed is splits and \
            feature_key(model.features, feature_data(spec.data), device, opts.eval_batch_size) == key:
        # the backbone is still the one the features came from: evaluate the classifier on them
        report = final_report(ClassifierHead(model.classifier), feats, device, opts.eval_batch_size)
        records["final_eval"] = "cached_features"
    else:
        report = final_report(reported, viewed, device, opts.eval_batch_size)
    result = _record(spec, bench, viewed, selected, report, records, device, opts, dist, train_s, time.time() - t1,
                     names)
    result["params"] = counted.record(model, param_extra(model))  # trainable (in any stage) and total
    if dist.is_main:
        result["model_sha256"] = rd.save_model(model.state_dict())
        atomic_write_json(rd.result_file, result)
        rd.done_file.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        log_final(opts.log, rd, method.stages[-1], result)  # --log: after the record, never in its way
    return result


def _at_input(splits: TrainSplits, model: torch.nn.Module, spec: RunSpec, records: dict[str, Any]) -> TrainSplits:
    """The splits brought to the model's input (ltbench.data.resolution.at_backbone_input: a pretrained
    backbone's size, mean and std, or data.resolution's size), what the record says of it (data_info.input,
    and method_record.backbone.input for a pretrained backbone)."""
    out, info = at_backbone_input(splits, model, spec.data)
    if "backbone" in records and info is not None:
        records["backbone"]["input"] = info["summary"]
    return out


def _prepare_stage(model: torch.nn.Module, method: Method, ctx: StageContext, counted: peft.ParamCount) -> None:
    """What trains in the stage: its tuning's choice (ltbench.models.peft; ``full``: all), then the method's
    ``prepare``; the trainable parameters are counted for the record."""
    peft.freeze(model, ctx.hp.get("tuning", "full"))
    method.prepare(model, ctx)
    model.to(ctx.device)
    if method.trains(ctx.stage):
        counted.stage(ctx.stage, model)


def _initial_model(spec: RunSpec, bench: Any, splits: TrainSplits, opts: RunOptions,
                   store: Store) -> tuple[LTModel, dict[str, Any]]:
    """The backbone a run starts from: its stage-1 run's model.pt (checked against its sha256), the
    --init-weights file, or a random init; and what the record says about it."""
    model, records = build_run_model(spec, splits.num_classes, bench.in_channels, opts.backbone_weights, opts.download)
    if spec.parent is not None:
        parent = store.run_dir(spec.parent_spec())
        _, problem = parent.model_sha256()
        if problem is not None:
            raise LtbenchError(f"the stage-1 run's {parent.model_file} is {problem}: delete {parent.path} (its stage-1 "
                               "run) and run the same command again: it is trained anew.")
        model.load_state_dict(load_checked(parent.model_file, f"delete {parent.path} (its stage-1 run) and run "
                                           "the same command again: it is trained anew"))
        records["parent"] = parent.run_id
        records["parent_model_sha256"] = recorded_sha256(parent.model_file) or file_sha256(parent.model_file)
    elif spec.init is not None:
        records["init_weights"] = load_initial_weights(model, opts.init_weights)
    return model, records


def _record(spec: RunSpec, bench: Any, splits: TrainSplits, selected: dict[str, Any], report: dict[str, Any],
            records: dict[str, Any], device: torch.device, opts: RunOptions, dist: Dist, train_s: float,
            eval_s: float, names: list[str] | None = None) -> dict[str, Any]:
    """result.json of a finished run (model_sha256 is added when model.pt is written)."""
    return {
        "run_id": spec.run_id, "spec": spec.canonical(), "label": bench.label(spec.data),
        "benchmark": spec.benchmark, "method": spec.method, "backbone": spec.backbone, "recipe": spec.recipe,
        "seed": spec.seed, "selected": selected, **report,
        "class_counts": splits.class_counts, "class_names": names,
        "shot_rule": splits.shot_rule.describe(),
        "groups": {k: len(v) for k, v in splits.shot_rule.groups(splits.class_counts).items()},
        "data_info": splits.info, "method_record": records,
        "timings": {"train_s": train_s, "final_eval_s": eval_s},
        "env": {**environment(device), **distributed.describe(dist, spec.stages, opts.sync_bn),
                "compile": opts.compile, **opts.extra_env},
    }


def _class_names(spec: RunSpec, bench: Any, splits: TrainSplits, opts: RunOptions) -> list[str] | None:
    """The benchmark's class names for result.json (``Benchmark.read_class_names``); None where it does not
    know them, or (with a warning) where they cannot be read: a finished run is never lost for its names."""
    try:
        names = bench.read_class_names(spec.data, Path(opts.data_root), opts.split_root)
    except Exception as exc:  # a names file that does not read, a plugin's bug: the record goes on without names
        console.print(f"[yellow]warning:[/yellow] {escape(spec.benchmark)}: class names not recorded "
                      f"({escape(str(exc) or type(exc).__name__)})", highlight=False, soft_wrap=True)
        return None
    return [str(n) for n in names] if names is not None and len(names) == splits.num_classes else None
