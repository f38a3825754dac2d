"""The fast paths give the numbers of the plain paths: a short run with a fixed seed, compared
metric by metric.

- The engine's stage 1 (uint8 images in memory, batched crop/flip, channels_last) against a plain
  loop written the common way: per-image torchvision transforms on float tensors, the default
  memory layout, the same model, optimizer, schedule and random draws.
- torch.compile against eager.
- (Cached features against the frozen backbone run every epoch, and kept features against
  extracted ones: tests/test_methods.py.)

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

from ltbench.backbones import build_backbone
from ltbench.data import per_epoch_generator, sample_indices
from ltbench.engine import RunOptions, _stage_steps, execute, lr_factor
from ltbench.evaluation import accuracy_report
from ltbench.registry import benchmarks
from ltbench.specs import resolve
from ltbench.store import Store

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
