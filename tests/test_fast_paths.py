"""The fast paths give the numbers of the plain paths: a short run with a fixed seed, compared
metric by metric.

- The engine's stage 1 (uint8 images in memory, batched crop/flip, channels_last) against a plain
  loop written the common way: per-image torchvision transforms on float tensors, the default
  memory layout, the same model, optimizer, schedule and random draws.
- torch.compile against eager.
- (Cached features against the frozen backbone run every epoch, and kept features against
  extracted ones: tests/test_methods.py.)

And the GPU path's rule, checked on the CPU: no host-device copy or host read of a tensor value
(each one a sync on a GPU) per training step; only per epoch.

Tolerance: float32 sums run in another order in each path (channels_last kernels, fused compiled
kernels), so the paths agree to rounding, not bit for bit: per-epoch mean losses within 1e-4
relative, classifier weights within 1e-4, and test accuracy within one image.
"""

import dataclasses
import shutil

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.overrides import TorchFunctionMode

from ltbench.data.splits import (
    Augment,
    FeatureSplits,
    ImageSet,
    Splits,
    TensorSet,
    per_epoch_generator,
    sample_indices,
)
from ltbench.engine.evaluation import accuracy_report
from ltbench.engine.training import ClassifierHead, RunOptions, _stage_steps, execute, lr_factor, train_stage
from ltbench.method import StageContext
from ltbench.models.backbones import build_backbone, small_cnn
from ltbench.registry import benchmarks, methods
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import engine_defaults

OPTS = RunOptions(device="cpu", live_progress=False)
EPOCHS = 3


def plain_stage1(spec, splits, in_channels):
    """CE training the common way, drawing from the engine's per-epoch generator in its order
    (sample order, then per batch: crop rows, crop columns, flips)."""
    hp, aug = spec.stages["train"], splits.augment
    torch.manual_seed(spec.seed)
    model = build_backbone(spec.backbone, splits.num_classes, in_channels)
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"],
                          weight_decay=hp["weight_decay"])
    steps, p = _stage_steps(splits, hp), aug.crop_padding
    _, _, h, w = splits.train.x.shape
    losses = []
    for epoch in range(hp["epochs"]):
        model.train()
        gen = per_epoch_generator(spec.seed, epoch)
        order = sample_indices(splits.train.y, hp["sampler"], gen)
        total, seen = 0.0, 0
        for i, start in enumerate(range(0, len(order), hp["batch_size"])):
            b = order[start:start + hp["batch_size"]]
            if len(b) < 2:
                break
            n = len(b)
            oy = torch.randint(0, 2 * p + 1, (n,), generator=gen).tolist() if p else [0] * n
            ox = torch.randint(0, 2 * p + 1, (n,), generator=gen).tolist() if p else [0] * n
            flip = (torch.rand(n, generator=gen) < 0.5).tolist() if aug.flip else [False] * n
            images = []
            for j, k in enumerate(b.tolist()):
                img = TF.crop(TF.pad(splits.train.x[k], [p]), oy[j], ox[j], h, w)
                img = TF.horizontal_flip(img) if flip[j] else img
                images.append(TF.normalize(TF.to_dtype(img, torch.float32, scale=True), splits.mean, splits.std))
            x, y = torch.stack(images), splits.train.y[b]
            for g in opt.param_groups:
                g["lr"] = hp["lr"] * lr_factor(hp, epoch + i / steps)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * n, seen + n
        losses.append(total / seen)
    model.eval()
    with torch.no_grad():
        xt = torch.stack([TF.normalize(TF.to_dtype(im, torch.float32, scale=True), splits.mean, splits.std)
                          for im in splits.test.x])
        logits = model(xt)
    return model, losses, accuracy_report(logits, splits.test.y, splits.class_counts, splits.shot_rule)


def _ce_spec():
    return resolve("ce", "digits_lt", epochs=EPOCHS, sets=["train.select=last"])


def test_engine_stage1_equals_the_plain_per_image_loop(tmp_path):
    spec = _ce_spec()
    assert spec.stages["train"]["augment"] and spec.stages["train"]["weight_decay"] >= 0
    store = Store(tmp_path)
    fast = execute(spec, store, OPTS)
    bench = benchmarks.get("digits_lt")()
    splits = bench.load(spec.data, tmp_path, False, None)
    assert splits.augment.crop_padding > 0  # the random crop is part of the comparison
    model, losses, test = plain_stage1(spec, splits, bench.in_channels)
    fast_losses = [r["loss"] for r in store.run_dir(spec).metrics()]
    assert len(fast_losses) == EPOCHS
    assert fast_losses == pytest.approx(losses, rel=1e-4)
    assert losses[-1] < 0.8 * losses[0]  # it did learn: the comparison is not between two idle models
    state = torch.load(store.run_dir(spec).model_file, map_location="cpu", weights_only=True)
    assert torch.allclose(state["classifier.weight"], model.classifier.weight.detach(), atol=1e-4)
    n_test = test["n_images"]
    assert abs(fast["test"]["top1"] - test["top1"]) <= 100.0 / n_test + 1e-9


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_compiled_training_equals_eager(tmp_path):
    spec = _ce_spec()
    eager = execute(spec, Store(tmp_path / "eager"), OPTS)
    compiled = execute(spec, Store(tmp_path / "compiled"), dataclasses.replace(OPTS, compile=True))
    assert compiled["env"]["compile"] is True and eager["env"]["compile"] is False
    assert compiled["run_id"] == eager["run_id"]  # a way of running, not part of the spec
    loss = {k: [r["loss"] for r in Store(tmp_path / k).run_dir(spec).metrics()] for k in ("eager", "compiled")}
    assert loss["compiled"] == pytest.approx(loss["eager"], rel=1e-4)
    assert compiled["classifier_norms"] == pytest.approx(eager["classifier_norms"], abs=1e-4)
    assert abs(compiled["test"]["top1"] - eager["test"]["top1"]) <= 100.0 / eager["test"]["n_images"] + 1e-9


# ----------------------------------------------------------------- no host sync per training step

class HostSyncs(TorchFunctionMode):
    """Records the torch calls that copy between host and device or read a value on the host."""

    NAMES = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "cuda", "numpy",
             "nonzero", "tensor", "pin_memory"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        to_device = name == "to" and (any(isinstance(a, (str, torch.device)) for a in args[1:]) or "device" in kwargs)
        if name in self.NAMES or to_device:
            self.calls.append(name)
        return func(*args, **kwargs)


def _synthetic_splits(n=70, flip=True):
    g = torch.Generator().manual_seed(0)

    def images(k):
        return ImageSet(torch.randint(0, 256, (k, 3, 8, 8), generator=g, dtype=torch.uint8),
                        torch.arange(k) % 5)

    return Splits(images(n), images(20), images(20), 5, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), Augment(2, flip))


@pytest.mark.parametrize("sampler", ["instance", "class_balanced"])
def test_batches_after_the_first_need_no_transfer(sampler):
    splits = _synthetic_splits()
    feats = FeatureSplits(TensorSet(torch.randn(70, 4), splits.train.y), TensorSet(torch.randn(20, 4), splits.val.y),
                          TensorSet(torch.randn(20, 4), splits.test.y), splits)
    for source, augment in ((splits, True), (splits, False), (feats, False)):
        batches = source.train_batches(16, sampler, torch.Generator().manual_seed(1), torch.device("cpu"), augment)
        next(batches)  # the epoch's one copy to the device happens before the first batch
        with HostSyncs() as log:
            rest = list(batches)
        assert len(rest) == 4 and log.calls == [], (type(source).__name__, augment, log.calls)


def _stage_ctx(method, hp, splits):
    return StageContext(stage=method.stages[-1], hp=hp, splits=splits, device=torch.device("cpu"), num_classes=5,
                        class_counts=splits.class_counts)


@pytest.mark.parametrize("name", ["ce", "cb", "ldam_drw", "logit_adj", "balanced_softmax", "wb", "crt", "lws"])
def test_training_steps_read_nothing_on_the_host(name, tmp_path):
    """Every trained method, through the engine's own loop: the host syncs of one epoch do not grow
    with its number of steps (so there is none per step)."""
    method = methods.get(name)()
    counts = []
    for i, batch in enumerate((32, 32, 8)):  # 2, 2 and 8 steps per epoch
        splits = _synthetic_splits()
        stage = method.stages[-1]
        hp = {**engine_defaults(), **method.hparams(stage, "paper", "digits"), "epochs": 1, "batch_size": batch,
              "select": "last", "augment": True}
        torch.manual_seed(0)
        model = small_cnn(5, 3)
        ctx = _stage_ctx(method, hp, splits)
        method.prepare(model, ctx)
        net = ClassifierHead(model.classifier) if method.frozen_features(stage) else model
        if net is not model:
            ctx.splits = FeatureSplits(*(TensorSet(torch.randn(len(getattr(splits, s)), 128),
                                                   getattr(splits, s).y) for s in ("train", "val", "test")), splits)
        rd = Store(tmp_path / str(i)).create(_ce_spec())
        with HostSyncs() as log:
            train_stage(net, method, ctx, rd, 0, dataclasses.replace(OPTS, eval_batch_size=16), name)
        counts.append(len(log.calls))
    assert counts[1] == counts[2], counts  # (the first pass made tensors that later ones reuse)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ce", "wb"])
def test_cuda_training_steps_never_sync(name):
    """On a GPU, under torch's sync debug mode set to error: the batches after the first (uint8
    data resident on the GPU, augmentation there) and the steps on them, in bf16 autocast and
    channels_last, make no synchronising call."""
    from ltbench.engine.evaluation import autocast, to_memory_format
    from ltbench.engine.stage_options import MaxNorm, stage_record

    device = torch.device("cuda")
    splits = _synthetic_splits(n=300)
    method = methods.get(name)()
    stage = method.stages[-1]
    hp = {**engine_defaults(), **method.hparams(stage, "paper", "digits"), "epochs": 1, "batch_size": 32}
    torch.manual_seed(0)
    model = small_cnn(5, 3).to(device, memory_format=torch.channels_last)
    ctx = StageContext(stage=stage, hp=hp, splits=splits, device=device, num_classes=5,
                       class_counts=splits.class_counts)
    method.prepare(model, ctx)
    rec = stage_record(model, ctx)  # WB's MaxNorm is the engine's (ltbench.engine.stage_options), projected after each step
    maxnorm = MaxNorm(rec["maxnorm"]["radius"], rec["maxnorm"]["every"]) if "maxnorm" in rec else None
    opt = torch.optim.SGD(method.param_groups(model, ctx), lr=0.01, momentum=0.9)

    def step(x, y):
        with autocast(device):
            logits = model(to_memory_format(x, device)).float()
        loss = method.loss(logits, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(model, ctx)
        if maxnorm is not None:
            maxnorm.project(model)
        return loss.detach()

    batches = splits.train_batches(32, "class_balanced", torch.Generator().manual_seed(0), device, True)
    step(*next(batches))  # the epoch's one copy, cuDNN's first choices and the optimizer's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(x, y) for x, y in batches]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(losses) == 9 and torch.isfinite(torch.stack(losses)).all()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_run_options_reach_the_record_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from ltbench.cli.app import app

    r = CliRunner().invoke(app, ["run", "--method", "crt", "--epochs", "1", "--set", "stage2.epochs=1", "--compile",
                                 "--no-keep-features", "--device", "cpu", "--results", str(tmp_path)])
    assert r.exit_code == 0, r.output
    store = Store(tmp_path)
    crt = next(rd for rd in store.runs() if rd.path.parent.name == "crt").result()
    assert crt["env"]["compile"] is True
    assert crt["method_record"]["stage2_features"] == "extracted"
    assert not list(tmp_path.glob("runs/*/ce/*/features"))  # --no-keep-features: nothing kept on disk
