"""BCL (Zhu et al. 2022): the balanced contrastive loss and the logit-compensated CE against hand
computations, the contrastive views (deterministic per (seed, epoch, step), 1 and 3 channels), and a
digits-LT run that trains and resumes to the identical result."""

import math

import pytest
import torch
import torch.nn.functional as F
from ltbench.methods.bcl import (
    BCL,
    balanced_contrastive_loss,
    color_jitter,
    compensated_ce,
    contrastive_views,
    resized_crop_flip,
    shift_hue,
    view_generator,
)
from ltbench.methods.ldam_drw import NormedLinear
from typer.testing import CliRunner

import ltbench.engine.training as engine
from ltbench.cli.app import app
from ltbench.engine.training import RunOptions, execute
from ltbench.method import StageContext, check_hparam_names
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)
E1, E2 = [1.0, 0.0], [0.0, 1.0]


# ----------------------------------------------------------------------------- the losses

def reference_bcl(z, y, protos, t):
    """L_BCL written out with explicit sets: A = every embedding and prototype but the anchor, A_k
    its members of class k, P the anchor's positives."""
    y2 = list(y) + list(y)
    items = [(z[j], y2[j], ("z", j)) for j in range(len(z))] + [(protos[k], k, ("p", k)) for k in range(len(protos))]
    total = 0.0
    for i in range(len(z)):
        a = [(u, c) for u, c, tag in items if tag != ("z", i)]
        denom = 0.0
        for k in {c for _, c in a}:
            members = [u for u, c in a if c == k]
            denom += sum(math.exp(float(z[i] @ u) / t) for u in members) / len(members)
        pos = [u for u, c in a if c == y2[i]]
        total += -sum(float(z[i] @ u) / t - math.log(denom) for u in pos) / len(pos)
    return total / len(z)


def test_bcl_loss_by_hand_class_averaging():
    # two images (classes 0, 1), two views each, on e1 / e2; prototypes e1, e2; T = 1. For every
    # anchor: A_0 = {its other view, p0} (2 members, sim 1), A_1 = {two views, p1} (3 members, sim 0),
    # so the denominator is (e + e) / 2 + 3 / 3 = e + 1, and both positives have sim 1.
    z = torch.tensor([E1, E2, E1, E2])  # view 1 of images 0, 1, then view 2
    loss = balanced_contrastive_loss(z, torch.tensor([0, 1]), torch.tensor([E1, E2]), 1.0)
    assert float(loss) == pytest.approx(math.log(1 + math.e) - 1, rel=1e-6)
    # plain SupCon's denominator (sum over A, no class averaging) would be 2e + 3
    assert float(loss) != pytest.approx(math.log(2 * math.e + 3) - 1, rel=1e-3)


def test_bcl_loss_by_hand_prototypes_join_the_batch():
    # the prototypes sit on the other class's views: p0 = e2, p1 = e1. Anchor e1 of class 0:
    # A_0 = {e1 view, p0 = e2}: (e + 1) / 2; A_1 = {e2, e2, p1 = e1}: (2 + e) / 3; positives: sims 1 and 0
    z = torch.tensor([E1, E2, E1, E2])
    loss = balanced_contrastive_loss(z, torch.tensor([0, 1]), torch.tensor([E2, E1]), 1.0)
    expected = math.log((math.e + 1) / 2 + (math.e + 2) / 3) - 0.5
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_bcl_loss_matches_the_written_out_sets_on_random_data():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 0, 1, 2, 1])  # unequal classes; class 3 only as a prototype
    z = F.normalize(torch.randn(12, 3, generator=g), dim=1)
    protos = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    got = balanced_contrastive_loss(z, y, protos, 0.07)
    assert float(got) == pytest.approx(reference_bcl(z.double(), y.tolist(), protos.double(), 0.07), rel=1e-5)


def test_logit_compensated_ce_by_hand():
    counts = [3, 1]
    prior_log = torch.tensor([math.log(0.75), math.log(0.25)])
    # equal logits: the adjusted softmax is the prior, so CE on class 1 is -log(1/4), on class 0 -log(3/4)
    ce = compensated_ce(torch.zeros(2, 2), torch.tensor([0, 1]), prior_log, 1.0, 1.0)
    assert float(ce) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)
    # a cosine logit scaled by 30: z = (0.1, 0) -> 30 z + log pi = (3 + log .75, log .25)
    a, b = 3 + math.log(0.75), math.log(0.25)
    ce = compensated_ce(torch.tensor([[0.1, 0.0]]), torch.tensor([1]), prior_log, 30.0, 1.0)
    assert float(ce) == pytest.approx(-(b - math.log(math.exp(a) + math.exp(b))), rel=1e-5)
    assert sum(counts) == 4


# ----------------------------------------------------------------------------- the views

def identity_draws(n, **kw):
    d = {"cw": torch.ones(n), "ch": torch.ones(n), "x0": torch.zeros(n), "y0": torch.zeros(n),
         "flip": torch.zeros(n, dtype=torch.bool), "bright": torch.ones(n), "contrast": torch.ones(n),
         "sat": torch.ones(n), "hue": torch.zeros(n), "jitter": torch.zeros(n, dtype=torch.bool),
         "gray": torch.zeros(n, dtype=torch.bool)}
    return {**d, **kw}


def test_crop_flip_and_colour_ops_by_hand():
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(resized_crop_flip(x, identity_draws(2)), x, atol=1e-6)
    flipped = resized_crop_flip(x, identity_draws(2, flip=torch.tensor([True, False])))
    assert torch.allclose(flipped[0], x[0].flip(2), atol=1e-6) and torch.allclose(flipped[1], x[1], atol=1e-6)
    # the left half (box x0 = 0, width 1/2) of a 4-wide ramp 0,1,2,3 resized to 4: samples at pixel
    # coordinates -0.25, 0.25, 0.75, 1.25 (bilinear, the border repeated; the last one blends in pixel 2)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    half = resized_crop_flip(ramp, identity_draws(1, cw=torch.tensor([0.5])))
    assert half[0, 0, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.25], abs=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert shift_hue(red, torch.tensor([1 / 3])).flatten().tolist() == pytest.approx([0, 1, 0], abs=1e-6)
    assert torch.allclose(shift_hue(x, torch.zeros(2)), x, atol=1e-6)
    on = torch.tensor([True])
    darker = color_jitter(red * 0.5, identity_draws(1, jitter=on, bright=torch.tensor([0.5])))
    assert darker.flatten().tolist() == pytest.approx([0.25, 0, 0])
    gray = color_jitter(red, identity_draws(1, gray=on))
    assert gray.flatten().tolist() == pytest.approx([0.299] * 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_deterministic_per_seed_epoch_and_step(channels):
    mean, std = (0.5,) * channels, (0.25,) * channels
    x = (torch.rand(8, channels, 8, 8, generator=torch.Generator().manual_seed(2)) - 0.5) / 0.25

    def views(seed, epoch, step):
        return torch.cat(contrastive_views(x, mean, std, view_generator(seed, epoch, step), 0.08))

    a = views(0, 3, 5)
    assert a.shape == (16, channels, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, views(0, 3, 5))
    for other in (views(0, 3, 6), views(0, 4, 5), views(1, 3, 5)):
        assert not torch.allclose(a, other)
    assert not torch.allclose(a[:8], a[8:])  # the two views differ
    assert float(a.min()) >= (0 - 0.5) / 0.25 - 1e-5 and float(a.max()) <= (1 - 0.5) / 0.25 + 1e-5


def test_step_counter_restarts_with_each_epoch():
    m = BCL()
    ctx = StageContext(stage="train", hp={}, splits=None, device=torch.device("cpu"), num_classes=2,
                       class_counts=[2, 1], seed=7, state={"view_step": [0, 0]})
    draws = [m._next_generator(ctx).initial_seed() for _ in range(3)]
    assert draws == [view_generator(7, 0, s).initial_seed() for s in range(3)] and len(set(draws)) == 3
    ctx.epoch = 1  # the next epoch (or a run resumed at it) starts again at step 0
    assert m._next_generator(ctx).initial_seed() == view_generator(7, 1, 0).initial_seed()
    assert ctx.state["view_step"] == [1, 1]


# ----------------------------------------------------------------------------- the method

def test_registered_listed_and_resolved():
    assert check_hparam_names(BCL) == []
    out = CliRunner().invoke(app, ["list", "methods"])
    assert out.exit_code == 0 and "bcl" in out.output
    hp = resolve("bcl", "cifar100_lt").stages["train"]
    assert (hp["epochs"], hp["batch_size"], hp["lr"], hp["warmup_epochs"]) == (200, 256, 0.15, 5)
    assert (hp["ce_weight"], hp["scl_weight"], hp["temperature"]) == (2.0, 0.6, 0.1)
    assert hp["autoaugment"] == "none"  # not torchvision's RandAugment(2, 9): their timm one, in the method
    assert (hp["randaug_n"], hp["randaug_m"], hp["randaug_mstd"], hp["lr_update"]) == (2, 10.0, 0.5, "epoch")
    assert BCL().check("train", hp) == [] and len(BCL().check("train", {**hp, "mix": "mixup"})) == 1
    hp = resolve("bcl", "cifar100_lt", recipe="cao").stages["train"]
    assert (hp["batch_size"], hp["lr"]) == (128, 0.1)  # another recipe keeps its own training schedule


def test_digits_run_trains_and_resumes_identically(tmp_path, monkeypatch):
    spec = resolve("bcl", "digits_lt", epochs=3, sets=["cosine=false", "lr=0.1"])
    whole = execute(spec, Store(tmp_path / "whole"), OPTS)
    assert whole["test"]["top1"] > 30  # chance is 10 (digits-LT, 10 classes)
    model = torch.load(Store(tmp_path / "whole").run_dir(spec).model_file, weights_only=True)
    assert any(k.startswith("bcl_head.") for k in model) and any(k.startswith("bcl_proto.") for k in model)
    assert model["classifier.weight"].shape == (10, 128) and len(whole["classifier_norms"]) == 10

    save = engine._save_epoch

    def save_then_stop(rd, ctx, *args, **kw):
        save(rd, ctx, *args, **kw)
        if args[3]["epoch"] == 2:  # row: killed after epoch 2's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_save_epoch", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, Store(tmp_path / "split"), OPTS)
    monkeypatch.setattr(engine, "_save_epoch", save)
    resumed = execute(spec, Store(tmp_path / "split"), OPTS)
    assert resumed["test"]["per_class"] == whole["test"]["per_class"]
    again = torch.load(Store(tmp_path / "split").run_dir(spec).model_file, weights_only=True)
    assert all(torch.equal(model[k], again[k]) for k in model)


def test_cosine_classifier_keeps_the_logit_shape():
    spec = resolve("bcl", "digits_lt")
    assert spec.stages["train"]["cosine"] is True
    from ltbench.models.backbones import small_cnn

    model = small_cnn(10, 1)
    ctx = StageContext(stage="train", hp=spec.stages["train"], splits=type("S", (), {"mean": (0.5,), "std": (0.25,)})(),
                       device=torch.device("cpu"), num_classes=10, class_counts=[5] * 10)
    m = BCL()
    m.prepare(model, ctx)
    assert isinstance(model.classifier, NormedLinear)
    x = torch.randn(6, 1, 8, 8)
    model.train()
    logits, z, protos = m.forward(model, x, ctx)
    assert logits.shape == (6, 10) and z.shape == (12, 128) and protos.shape == (10, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(12), atol=1e-5)
    model.eval()
    assert model(x).shape == (6, 10)
    assert float(m.loss((logits, z, protos), torch.tensor([0, 1, 2, 0, 1, 2]), ctx).detach()) > 0
