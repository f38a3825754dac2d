"""Multi-expert backbones (ltbench.models.experts), SADE and RIDE: shapes and parameter sharing, the losses
against hand computations, SADE's test-time aggregation never reading labels, and short digits-LT runs
that train and resume."""

import math

import pytest
import torch
from ltbench.methods.ride import diversity_temperature_weights, ride_loss
from ltbench.methods.sade import (
    SADE,
    inverse_prior,
    learn_aggregation,
    sade_loss,
    sade_priors,
    stability_loss,
)

import ltbench.engine.training as engine
from ltbench.data.splits import Augment, ImageSet, Splits
from ltbench.engine.evaluation import classifier_norms
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.method import StageContext
from ltbench.models.backbones import build_backbone
from ltbench.models.experts import MultiExpertModel
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)


def ce_by_hand(row, y):
    return math.log(sum(math.exp(v) for v in row)) - row[y]


def softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


# ----------------------------------------------------------------------------- backbones

def test_resnet32_3experts_shares_its_stem_and_gives_each_expert_its_own_blocks():
    torch.manual_seed(0)
    model = build_backbone("resnet32_3experts", 10, 3)
    assert isinstance(model, MultiExpertModel) and model.num_experts == 3
    x = torch.randn(4, 3, 32, 32)
    z = model(x, experts=True)
    assert z.shape == (4, 3, 10)
    assert torch.allclose(model(x), z.mean(1), atol=1e-5)  # uniform weights: the mean of the experts
    # their reduced widths: stage 2 at 24 channels, stage 3 at 48, a 48-d feature per expert
    assert model.experts[0][0][0].conv1.out_channels == 24 and model.experts[0][1][0].conv1.out_channels == 48
    assert model.feature_dim == 48 and all(h.weight.shape == (10, 48) for h in model.heads)
    shared = {id(p) for p in model.shared.parameters()}
    per_expert = [{id(p) for p in e.parameters()} for e in model.experts]
    assert not shared & set().union(*per_expert) and not per_expert[0] & per_expert[1]
    assert not torch.equal(model.experts[0][0][0].conv1.weight, model.experts[1][0][0].conv1.weight)
    assert 0.7e6 < sum(p.numel() for p in model.parameters()) < 0.85e6
    # a loss on expert 0 alone: gradient in the shared stem and expert 0, none in experts 1 and 2
    model.zero_grad()
    model(x, experts=True)[:, 0].sum().backward()
    assert model.shared[0].weight.grad.abs().sum() > 0
    assert model.experts[0][0][0].conv1.weight.grad.abs().sum() > 0
    for p in (model.experts[1][0][0].conv1.weight, model.heads[2].weight):
        assert p.grad is None or not p.grad.any()


def test_small_cnn_3experts_and_the_weighted_aggregate():
    torch.manual_seed(0)
    model = build_backbone("small_cnn_3experts", 5, 1)
    x = torch.randn(3, 1, 8, 8)
    z = model(x, experts=True)
    assert z.shape == (3, 3, 5) and z.abs().max() <= 30.0 + 1e-4  # s cos: |z| <= s
    model.set_expert_weights(torch.tensor([0.5, 0.3, 0.2]))
    assert torch.allclose(model(x), 0.5 * z[:, 0] + 0.3 * z[:, 1] + 0.2 * z[:, 2], atol=1e-5)
    assert "expert_weights" in model.state_dict()  # saved with the model (model.pt)
    assert classifier_norms(model) == [30.0] * 5  # cosine rows: s * sum of the weights, every class


@pytest.mark.parametrize("name, groups", [("resnext50_32x4d_3experts", 32), ("resnet50_3experts", 1)])
def test_torchvision_3experts_share_layers_1_2_and_reduce_layers_3_4(name, groups):
    torch.manual_seed(0)
    model = build_backbone(name, 7, 3).eval()
    assert len(model.shared) == 6 and model.feature_dim == 1536  # stem, maxpool, layer1, layer2; 384 * 4
    layer3 = model.experts[1][0]
    assert len(layer3) == 6 and len(model.experts[1][1]) == 3
    assert layer3[0].conv2.groups == groups and layer3[0].conv3.out_channels == 768  # 192 * 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64), experts=True).shape == (1, 3, 7)


def test_features_and_classifier_of_a_multi_expert_model_are_a_clear_refusal():
    model = build_backbone("small_cnn_3experts", 5, 1)
    for attr in ("features", "classifier"):
        with pytest.raises(LtbenchError, match="multi-expert.*--backbone small_cnn"):
            getattr(model, attr)


# ----------------------------------------------------------------------------- SADE

def test_inverse_prior_reverses_the_prior_by_rank():
    counts = [5, 50, 1, 20]
    prior = torch.tensor(counts, dtype=torch.float32) / 76
    expected = torch.tensor([20, 1, 50, 5], dtype=torch.float32) / 76
    assert torch.allclose(inverse_prior(prior), expected)


def test_sade_loss_is_the_sum_of_the_three_experts_losses_by_hand():
    counts = [100, 10, 1]
    z = torch.tensor([[[1.0, 0.5, -1.0], [0.2, 0.1, 0.3], [-0.5, 2.0, 0.0]],
                      [[0.0, 1.0, 2.0], [1.5, -0.5, 0.5], [0.3, 0.3, -0.2]]])
    y = torch.tensor([0, 2])
    lam = 2.0
    pi = [c / 111 for c in counts]
    rev = [1 / 111, 10 / 111, 100 / 111]  # class 0 (most images) takes the smallest prior value
    lp = [math.log(p + 1e-9) for p in pi]
    lr = [math.log(p + 1e-9) for p in rev]
    total = 0.0
    for i in range(2):
        r1, r2, r3 = (z[i, k].tolist() for k in range(3))
        yi = int(y[i])
        total += ce_by_hand(r1, yi) / 2
        total += ce_by_hand([v + lp[c] for c, v in enumerate(r2)], yi) / 2
        total += ce_by_hand([v + lp[c] - lam * lr[c] for c, v in enumerate(r3)], yi) / 2
    log_prior, log_inverse = sade_priors(counts)
    assert float(sade_loss(z, y, log_prior, log_inverse, lam)) == pytest.approx(total, rel=1e-5)


def test_stability_loss_by_hand():
    z1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # one image, 2 experts, 2 classes
    z2 = torch.tensor([[[0.5, 0.5], [1.0, -1.0]]])
    w = torch.tensor([0.2, -0.1])
    a = softmax(w.tolist())
    p1 = softmax([a[0] * z1[0, 0, c].item() + a[1] * z1[0, 1, c].item() for c in range(2)])
    p2 = softmax([a[0] * z2[0, 0, c].item() + a[1] * z2[0, 1, c].item() for c in range(2)])
    cos = sum(u * v for u, v in zip(p1, p2, strict=True)) / math.sqrt(sum(u * u for u in p1) * sum(v * v for v in p2))
    assert float(stability_loss(w, z1, z2)) == pytest.approx(-cos, rel=1e-6)


def toy_splits(test_labels=None, n_test=24, seed=0):
    g = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)

    train_y = torch.tensor([0] * 30 + [1] * 10 + [2] * 3)
    test_y = torch.arange(n_test) % 3 if test_labels is None else test_labels
    return Splits(ImageSet(images(43), train_y, "train"), ImageSet(images(6), torch.arange(6) % 3, "val"),
                  ImageSet(images(n_test), test_y, "test"), 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                  Augment(crop_padding=1, flip=True))


class Poison:
    """A label batch that fails on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"the labels were read ({name})")


def sade_finalize(splits, seed=3):
    torch.manual_seed(seed)
    model = build_backbone("small_cnn_3experts", 3, 3)
    hp = {**SADE().hparams("train", "paper", "digits"), "tta_epochs": 2, "tta_batch": 8, "tta_lr": 5.0}
    ctx = StageContext(stage="train", hp=hp, splits=splits, device=torch.device("cpu"), num_classes=3,
                       class_counts=splits.class_counts)
    SADE().finalize(model, ctx)
    return model.expert_weights.clone(), ctx.record


def test_test_time_aggregation_never_reads_the_labels():
    weights, record = sade_finalize(toy_splits())
    assert record["test_time_aggregation"] == "learned on unlabelled test images (labels never read)"
    assert record["expert_weights"] == weights.tolist() and float(weights.sum()) == pytest.approx(1.0)
    assert not torch.allclose(weights, torch.full((3,), 1 / 3))  # it learned something
    garbage = torch.randint(-5, 50, (24,), generator=torch.Generator().manual_seed(9))  # shuffled, out of range
    assert torch.equal(sade_finalize(toy_splits(test_labels=garbage))[0], weights)

    class PoisonedSplits:  # the same images, every label batch a poison
        def __init__(self, base):
            self.base = base

        def __getattr__(self, name):
            return getattr(self.base, name)

        def eval_batches(self, split, batch_size, device, flip=False):
            assert split == "test" and not flip
            return ((x, Poison()) for x, _ in self.base.eval_batches(split, batch_size, device))

    assert torch.equal(sade_finalize(PoisonedSplits(toy_splits()))[0], weights)


def test_learn_aggregation_moves_weight_to_the_stable_expert():
    """Expert 0 gives the same prediction for both views, expert 1 flips: weight goes to expert 0."""

    class TwoExperts(MultiExpertModel):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.register_buffer("expert_weights", torch.full((2,), 0.5))
            self.experts = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])

        def forward(self, x, experts=False):
            stable = torch.tensor([5.0, -5.0]).expand(len(x), 2)
            return torch.stack([stable, x[:, :2] * 10], 1)

    views = lambda x, g: (x, -x)  # noqa: E731
    images = lambda: iter([torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(4, 1)])  # noqa: E731
    hp = {"tta_epochs": 5, "tta_lr": 0.5, "tta_batch": 8, "tta_weight_decay": 0.0, "tta_min_weight": 0.05}
    w, info = learn_aggregation(TwoExperts(), images, views, hp, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert w[0] > 0.6 and info["history"][-1]["stability"] > info["history"][0]["stability"] - 1e-9


# ----------------------------------------------------------------------------- RIDE

def test_ride_loss_by_hand_before_and_after_drw():
    z = torch.tensor([[[2.0, 1.0, 0.0], [0.5, 0.0, 1.0]],
                      [[0.0, 1.0, 0.5], [1.0, 2.0, -1.0]]])  # 2 images, 2 experts, 3 classes
    y = torch.tensor([0, 2])
    margins = torch.tensor([0.1, 0.2, 0.3])
    s, factor = 3.0, -0.45

    def by_hand(temps, w):
        t_mean = sum(temps) / len(temps)
        loss = 0.0
        for k in range(2):
            ce_num = ce_den = kl = 0.0
            for i in range(2):
                yi = int(y[i])
                row = [v - (s * float(margins[yi]) if c == yi else 0.0) for c, v in enumerate(z[i, k].tolist())]
                wi = 1.0 if w is None else w[yi]
                ce_num += wi * ce_by_hand(row, yi)
                ce_den += wi
                mean = [(z[i, 0, c].item() + z[i, 1, c].item()) / 2 for c in range(3)]
                q = softmax([m / temps[c] for c, m in enumerate(mean)])
                p = softmax([z[i, k, c].item() / temps[c] for c in range(3)])
                kl += sum(q[c] * (math.log(q[c]) - math.log(p[c])) for c in range(3)) / 2
            loss += ce_num / ce_den + factor * t_mean * t_mean * kl
        return loss

    assert float(ride_loss(z, y, margins, s, factor, 1.0, None)) == pytest.approx(by_hand([1.0] * 3, None), rel=1e-5)
    temps, w = [0.5, 0.8, 1.0], [0.5, 1.0, 1.5]
    got = ride_loss(z, y, margins, s, factor, torch.tensor(temps), torch.tensor(w))
    assert float(got) == pytest.approx(by_hand(temps, w), rel=1e-5)


def test_ride_diversity_temperatures_by_hand():
    counts, r = [60, 30, 10], 0.05
    v = [3 * (n / 100) * r + 1 - r for n in counts]
    assert diversity_temperature_weights(counts, r).tolist() == pytest.approx([x / max(v) for x in v])


# ----------------------------------------------------------------------------- specs and runs

def test_multi_expert_methods_pick_the_multi_expert_backbone():
    spec = resolve("sade", "digits_lt")
    assert spec.backbone == "small_cnn_3experts" and spec.origins["backbone"] == "method sade"
    cifar = resolve("ride", "cifar100_lt")
    assert cifar.backbone == "resnet32_3experts"
    hp = cifar.stages["train"]
    assert (hp["lr"], hp["batch_size"], hp["weight_decay"], hp["nesterov"], hp["gamma"]) == (0.1, 128, 5e-4, True, 0.01)
    assert resolve("sade", "cifar100_lt").stages["train"]["lam"] == 2.0
    assert resolve("ce", "digits_lt").backbone == "small_cnn"  # others are untouched
    assert resolve("sade", "digits_lt", backbone="small_cnn").backbone == "small_cnn"  # --backbone wins ...


def test_a_single_expert_backbone_is_refused_with_the_option_to_use(tmp_path):
    spec = resolve("sade", "digits_lt", backbone="small_cnn", epochs=1)  # ... and the run says what to pass
    with pytest.raises(LtbenchError, match="--backbone small_cnn_3experts"):
        execute(spec, Store(tmp_path), OPTS)


def test_a_decoupled_method_on_a_multi_expert_backbone_is_refused(tmp_path):
    spec = resolve("crt", "digits_lt", backbone="small_cnn_3experts", epochs=1)
    with pytest.raises(LtbenchError, match="multi-expert model"):
        execute(spec, Store(tmp_path), OPTS)


@pytest.mark.parametrize("method", ["sade", "ride"])
def test_short_digits_runs_train_and_resume_to_the_same_result(tmp_path, monkeypatch, method):
    sets = ["train.tta_epochs=2"] if method == "sade" else ["train.drw_start=0.5"]
    spec = resolve(method, "digits_lt", epochs=2, sets=sets)
    reference = execute(spec, Store(tmp_path / "ref"), OPTS)
    assert reference["test"]["top1"] > 100 / 10 and reference["backbone"] == "small_cnn_3experts"

    real_run, calls = engine.EpochLoop.run, []

    def interrupted(self, epoch, bar):
        calls.append(epoch)
        if epoch == 1 and len(calls) == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint
        return real_run(self, epoch, bar)

    monkeypatch.setattr(engine.EpochLoop, "run", interrupted)
    store = Store(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        execute(spec, store, OPTS)
    resumed = execute(spec, store, OPTS)
    assert calls == [0, 1, 1]  # the resumed run trained only epoch 2
    for key in ("val", "test", "classifier_norms", "selected"):
        assert resumed[key] == reference[key], key
    if method == "sade":
        assert resumed["method_record"]["expert_weights"] == reference["method_record"]["expert_weights"]
        assert reference["method_record"]["test_time_epochs_run"] >= 1
