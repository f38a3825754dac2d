"""focal, cb_focal, mislas and disalign: their math against hand computations (plain floats, from the
papers' code: LDAM-DRW's FocalLoss, Cui et al.'s sigmoid focal loss, MiSLAS's LabelAwareSmoothing,
cvpods' DisAlignLinear and GRWCrossEntropyLoss), and short digits-LT runs that train, stay finite and
resume to the very same model."""

import math
import shutil

import pytest
import torch
import torch.nn as nn
from ltbench.methods.disalign import CalibratedLinear, DisAlign, grw_loss, grw_weights
from ltbench.methods.focal import CBFocal, Focal, focal_loss, sigmoid_focal_loss
from ltbench.methods.lws import ScaledLinear
from ltbench.methods.mislas import MiSLAS, label_aware_eps, label_aware_smoothing_loss

from ltbench.engine.evaluation import accuracy_report, predict
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.method import StageContext, check_hparam_names
from ltbench.models.backbones import build_backbone
from ltbench.registry import benchmarks, methods
from ltbench.results.store import Store
from ltbench.spec.run_spec import RunSpec, resolve

OPTS = RunOptions(device="cpu", live_progress=False)
LOGITS = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]  # the 2x3 example
TARGETS = [1, 0]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def ctx_for(hp, counts, stage="train"):
    return StageContext(stage=stage, hp=dict(hp), splits=None, device=torch.device("cpu"),
                        num_classes=len(counts), class_counts=list(counts))


class Toy(nn.Module):
    """The LTModel layout: ``features`` then a linear ``classifier``."""

    def __init__(self, d_in=5, d=4, c=3):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(d_in, d), nn.ReLU())
        self.classifier = nn.Linear(d, c)

    def forward(self, x):
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- focal

@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_loss_on_the_2x3_example_by_hand(gamma):
    by_hand = 0.0
    for row, y in zip(LOGITS, TARGETS, strict=True):
        p = softmax(row)[y]
        by_hand += -((1 - p) ** gamma) * math.log(p)
    by_hand /= 2
    got = focal_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), gamma)
    assert float(got) == pytest.approx(by_hand, rel=1e-6)
    # the first row's numbers, written out: p_1 = e^2 / (e + e^2 + e^0.5)
    p1 = math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(0.5))
    assert p1 == pytest.approx(0.6285317, rel=1e-6)


def test_focal_gamma_zero_is_cross_entropy_and_gamma_lowers_easy_examples():
    z, y = torch.tensor(LOGITS), torch.tensor(TARGETS)
    assert float(focal_loss(z, y, 0.0)) == pytest.approx(float(nn.functional.cross_entropy(z, y)), rel=1e-6)
    assert float(focal_loss(z, y, 2.0)) < float(focal_loss(z, y, 1.0)) < float(focal_loss(z, y, 0.0))
    sure = torch.tensor([[0.0, 60.0, 0.0]], requires_grad=True)  # p_y = 1 in float32: finite, no NaN gradient
    for gamma in (0.5, 1.0):
        loss = focal_loss(sure, torch.tensor([1]), gamma)
        loss.backward()
        assert math.isfinite(float(loss.detach())) and torch.isfinite(sure.grad).all()


def test_focal_method_reads_focal_gamma():
    ctx = ctx_for({"focal_gamma": 2.0}, [10, 5, 1])
    z, y = torch.tensor(LOGITS), torch.tensor(TARGETS)
    assert float(Focal().loss(z, y, ctx)) == pytest.approx(float(focal_loss(z, y, 2.0)), rel=1e-7)
    assert Focal().hparams("train", "paper", "cifar") == {"focal_gamma": 1.0}


# ----------------------------------------------------------------------------- class-balanced focal (sigmoid)

def cb_by_hand(counts, beta):
    raw = [(1.0 - beta) / (1.0 - beta ** n) for n in counts]
    return [r * len(counts) / sum(raw) for r in raw]


def sigmoid_focal_by_hand(logits, targets, weights, gamma):
    """Cui et al.: sum_i w_{y_i} sum_j (1 - p_t)^gamma (-log p_t), divided by the number of positives."""
    total = 0.0
    for row, y in zip(logits, targets, strict=True):
        for j, z in enumerate(row):
            p_t = sigmoid(z) if j == y else 1.0 - sigmoid(z)
            total += weights[y] * (1.0 - p_t) ** gamma * -math.log(p_t)
    return total / len(targets)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_cb_focal_on_the_2x3_example_by_hand(gamma):
    counts, beta = [100, 10, 1], 0.9999
    w = cb_by_hand(counts, beta)
    assert sum(w) == pytest.approx(3.0)
    by_hand = sigmoid_focal_by_hand(LOGITS, TARGETS, w, gamma)
    got = sigmoid_focal_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w), gamma)
    assert float(got) == pytest.approx(by_hand, rel=1e-5)
    ctx = ctx_for({"beta": beta, "focal_gamma": gamma}, counts)
    CBFocal().prepare(Toy(), ctx)
    assert ctx.state["cb_weights"].tolist() == pytest.approx(w, rel=1e-6)
    assert float(CBFocal().loss(torch.tensor(LOGITS), torch.tensor(TARGETS), ctx)) == pytest.approx(by_hand, rel=1e-5)


def test_cb_focal_matches_cuis_modulator_formula_and_stays_finite_far_out():
    z, y, w = torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor([0.5, 2.0, 0.5])
    t = nn.functional.one_hot(y, 3).float()
    modulator = torch.exp(-1.0 * t * z - 1.0 * torch.log1p(torch.exp(-z)))  # their "stable" form, gamma 1
    bce = nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    theirs = (w[y][:, None] * modulator * bce).sum() / t.sum()
    assert float(sigmoid_focal_loss(z, y, w, 1.0)) == pytest.approx(float(theirs), rel=1e-6)
    far = torch.tensor([[-200.0, 200.0, 0.0]], requires_grad=True)  # their form overflows here
    loss = sigmoid_focal_loss(far, torch.tensor([0]), torch.ones(3), 1.0)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(far.grad).all()
    assert float(loss.detach()) == pytest.approx(200.0 + 200.0 + math.log(2) * 0.5, rel=1e-5)  # 2 wrong sides + z=0


def test_cb_focal_prepare_sets_the_bias_prior_and_keeps_weight_decay_off_it():
    torch.manual_seed(0)
    model = Toy(c=5)
    ctx = ctx_for({"beta": 0.9999, "focal_gamma": 1.0, "weight_decay": 5e-4}, [50, 20, 10, 5, 1])
    CBFocal().prepare(model, ctx)
    assert model.classifier.bias.tolist() == pytest.approx([-math.log(4)] * 5, rel=1e-6)
    assert sigmoid(-math.log(4)) == pytest.approx(1 / 5)  # every class starts near 1/C
    groups = CBFocal().param_groups(model, ctx)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert groups[1]["params"] == [model.classifier.bias]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- MiSLAS: label-aware smoothing

COUNTS4 = [100, 50, 10, 1]


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
def test_label_aware_eps_per_class_by_hand(shape):
    head, tail = 0.4, 0.1
    u = [(n - 1) / 99 for n in COUNTS4]
    by_hand = {"concave": [tail + (head - tail) * math.sin(math.pi / 2 * v) for v in u],
               "linear": [tail + (head - tail) * v for v in u],
               "convex": [head + (head - tail) * math.sin(1.5 * math.pi + math.pi / 2 * v) for v in u]}[shape]
    got = label_aware_eps(COUNTS4, head, tail, shape).tolist()
    assert got == pytest.approx(by_hand, abs=1e-7)
    assert got[0] == pytest.approx(head) and got[-1] == pytest.approx(tail, abs=1e-7)  # eps_1 head, eps_K tail
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))  # more images, more smoothing
    if shape == "concave":  # u = 49/99 for the class of 50: 0.1 + 0.3 sin(0.77747) = 0.1 + 0.3 x 0.70148
        assert got[1] == pytest.approx(0.1 + 0.3 * math.sin(math.pi / 2 * 49 / 99), rel=1e-6)
        assert got[1] == pytest.approx(0.31044, abs=1e-5)


def test_label_aware_smoothing_loss_by_hand():
    eps = [0.4, 0.25, 0.1]
    by_hand = 0.0
    for row, y in zip(LOGITS, TARGETS, strict=True):
        logp = [math.log(p) for p in softmax(row)]
        by_hand += (1 - eps[y]) * -logp[y] + eps[y] * -sum(logp) / 3
    by_hand /= 2
    got = label_aware_smoothing_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(eps))
    assert float(got) == pytest.approx(by_hand, rel=1e-6)
    zero = label_aware_smoothing_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.zeros(3))
    assert float(zero) == pytest.approx(float(nn.functional.cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGETS))))


def test_mislas_prepare_wraps_the_classifier_with_a_scale_and_two_learning_rates():
    torch.manual_seed(0)
    model = Toy(c=4)
    w0 = model.classifier.weight.detach().clone()
    hp = {**MiSLAS().hparams("stage2", "paper", "cifar")}
    ctx = ctx_for(hp, COUNTS4, stage="stage2")
    MiSLAS().prepare(model, ctx)
    assert isinstance(model.classifier, ScaledLinear) and torch.equal(model.classifier.linear.weight, w0)
    assert all(not p.requires_grad for p in model.features.parameters())
    assert model.classifier.linear.weight.requires_grad and model.classifier.scale.requires_grad
    lin, scale = MiSLAS().param_groups(model, ctx)
    assert lin["lr"] == pytest.approx(0.1 * 0.2) and "lr" not in scale  # their lr_factor 0.2; the scale at lr
    assert lin["weight_decay"] == scale["weight_decay"] == 2e-4
    assert ctx.state["smoothing"].tolist() == pytest.approx(label_aware_eps(COUNTS4, 0.4, 0.1).tolist())
    x = torch.randn(6, 5)
    assert torch.allclose(model(x), nn.functional.linear(model.features(x), w0, model.classifier.linear.bias))
    MiSLAS().prepare(model, ctx)  # again (a resumed run): no second wrapper
    assert isinstance(model.classifier.linear, nn.Linear)


def test_mislas_defaults_follow_their_configs():
    m = MiSLAS()
    assert m.stage1_hparams("paper", "cifar") == {"mix": "mixup", "mix_alpha": 1.0}
    assert m.stage1_hparams("paper", "imagenet_lt") == {"mix": "mixup", "mix_alpha": 0.2}
    cifar = m.hparams("stage2", "paper", "cifar")
    assert (cifar["smooth_head"], cifar["smooth_tail"], cifar["lr_factor"], cifar["batch_size"]) == (0.4, 0.1, 0.2, 128)
    assert (cifar["epochs"], cifar["lr"], cifar["sampler"], cifar["augment"], cifar["frozen_bn"]) == \
        (10, 0.1, "class_aware", True, "train")
    inat = m.hparams("stage2", "paper", "inat2018")
    assert (inat["smooth_head"], inat["smooth_tail"], inat["lr_factor"], inat["weight_decay"]) == (0.3, 0.0, 0.05, 1e-4)


# ----------------------------------------------------------------------------- DisAlign

def test_calibrated_logits_by_hand():
    linear = nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        linear.bias.copy_(torch.tensor([0.0, 0.5, -0.5]))
    cal = CalibratedLinear(linear)
    with torch.no_grad():
        cal.logit_scale.copy_(torch.tensor([0.5, -0.2, 2.0]))
        cal.logit_bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        cal.confidence.weight.copy_(torch.tensor([[0.3, -0.6]]))
        cal.confidence.bias.fill_(0.1)
    x = [[2.0, 1.0], [-1.0, 0.5]]
    by_hand = []
    for f in x:
        z = [f[0], f[1] + 0.5, f[0] - f[1] - 0.5]
        s = sigmoid(0.3 * f[0] - 0.6 * f[1] + 0.1)
        by_hand.append([(1 + s * a) * zj + s * b for zj, a, b in zip(z, [0.5, -0.2, 2.0], [0.0, 1.0, -1.0], strict=True)])
    assert cal(torch.tensor(x)).tolist() == [pytest.approx(r, rel=1e-6) for r in by_hand]
    # paper form: sigma (alpha z + beta) + (1 - sigma) z with alpha = 1 + a
    s0 = sigmoid(0.3 * 2 - 0.6 * 1 + 0.1)
    assert by_hand[0][0] == pytest.approx(s0 * (1.5 * 2.0) + (1 - s0) * 2.0)


def test_calibrated_linear_starts_as_the_authors_code_and_trains_only_the_calibration():
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    cal = CalibratedLinear(linear)
    assert cal.logit_scale.tolist() == [1.0] * 3 and cal.logit_bias.tolist() == [0.0] * 3
    assert cal.confidence.weight.tolist() == [pytest.approx([0.1] * 4, rel=1e-7)]
    assert not linear.weight.requires_grad and not linear.bias.requires_grad
    trainable = {n for n, p in cal.named_parameters() if p.requires_grad}
    assert trainable == {"logit_scale", "logit_bias", "confidence.weight", "confidence.bias"}
    assert torch.allclose(cal.weight, 2 * linear.weight)  # the rows at full confidence, (1 + a) w


def test_grw_weights_and_loss_by_hand():
    counts, rho = [100, 10, 1], 1.2
    r = [n / 111 for n in counts]
    raw = [(1 / v) ** rho for v in r]
    w = [v * 3 / sum(raw) for v in raw]
    assert grw_weights(counts, rho).tolist() == pytest.approx(w, rel=1e-6)
    assert grw_weights(counts, 0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    # torch's weighted mean: sum_i w_y CE_i / sum_i w_y
    ce = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(LOGITS, TARGETS, strict=True)]
    by_hand = (w[1] * ce[0] + w[0] * ce[1]) / (w[1] + w[0])
    got = grw_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w))
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def test_disalign_prepare_freezes_all_but_the_calibration():
    torch.manual_seed(0)
    model = Toy(c=3)
    hp = DisAlign().hparams("stage2", "paper", "imagenet_lt")
    assert (hp["lr"], hp["batch_size"], hp["weight_decay"], hp["epochs"], hp["rho"]) == (0.1, 256, 5e-4, 10, 1.2)
    assert DisAlign().hparams("stage2", "kang", "imagenet_lt")["frozen_bn"] == "train"
    ctx = ctx_for(hp, [100, 10, 1], stage="stage2")
    DisAlign().prepare(model, ctx)
    assert isinstance(model.classifier, CalibratedLinear)
    params = [p for g in DisAlign().param_groups(model, ctx) for p in g["params"]]
    cal = model.classifier
    assert {id(p) for p in params} == {id(cal.logit_scale), id(cal.logit_bias), id(cal.confidence.weight),
                                       id(cal.confidence.bias)}
    assert ctx.state["grw_weights"].tolist() == pytest.approx(grw_weights([100, 10, 1], 1.2).tolist())
    DisAlign().prepare(model, ctx)
    assert isinstance(model.classifier.linear, nn.Linear)


# ----------------------------------------------------------------------------- registration and checks

@pytest.mark.parametrize("name", ["focal", "cb_focal", "mislas", "disalign"])
def test_registered_without_name_clashes(name):
    assert name in methods.names()
    assert check_hparam_names(methods.get(name)) == []


@pytest.mark.parametrize("method, sets, key", [
    ("focal", ["train.focal_gamma=-1"], "focal_gamma"),
    ("cb_focal", ["train.beta=1.0"], "beta"),
    ("mislas", ["stage2.smooth_head=1.0"], "smooth_head"),
    ("mislas", ["stage2.smooth_shape=round"], "smooth_shape"),
    ("mislas", ["stage2.lr_factor=0"], "lr_factor"),
    ("disalign", ["stage2.rho=-1"], "rho"),
])
def test_bad_values_are_refused_naming_the_key(method, sets, key):
    with pytest.raises(LtbenchError, match=key):
        resolve(method, "digits_lt", epochs=2, sets=sets)


# ----------------------------------------------------------------------------- digits-LT runs

def stop_after(n):
    """An after_epoch hook that stops the process after epoch ``n``, before its checkpoint (a kill)."""
    def hook(self, model, ctx):
        if ctx.epoch + 1 == n:
            raise KeyboardInterrupt
    return hook


FAST = ["batch_size=16", "lr=0.05"]  # 4 epochs of 21 steps: about 65% test top-1 for CE on digits-LT


def spec_of(method):
    """4 epochs (stage 1 of a decoupled method, or its only stage), and 2 epochs of stage 2."""
    if methods.get(method).stage1:
        return resolve(method, "digits_lt", epochs=4, sets=["stage2.epochs=2"] + [f"stage1.{s}" for s in FAST])
    return resolve(method, "digits_lt", epochs=4, sets=[f"train.{s}" for s in FAST])


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A store with the stage-1 run of a decoupled method (mislas: CE with mixup; disalign: CE with WB's
    tuned weight decay), trained once per module; one-stage methods get an empty store."""
    root = tmp_path_factory.mktemp("stage1")
    done = set()

    def store_for(method):
        if methods.get(method).stage1 and method not in done:
            execute(spec_of(method).parent_spec(), Store(root), OPTS)
            done.add(method)
        return root
    return store_for


def fresh_store(stage1_root, path):
    shutil.copytree(stage1_root, path)
    return Store(path)


@pytest.mark.parametrize("method", ["focal", "cb_focal", "mislas", "disalign"])
def test_digits_run_trains_and_resumes_to_the_same_model(method, stage1, tmp_path, monkeypatch):
    spec, stage1 = spec_of(method), stage1(method)
    straight_store = fresh_store(stage1, tmp_path / "straight")
    straight = execute(spec, straight_store, OPTS)
    assert straight["test"]["top1"] > 40.0, straight["test"]  # 10 classes: chance is 10%
    stage = methods.get(method).stages[-1]
    losses = [r["loss"] for r in straight_store.run_dir(spec).metrics() if r.get("stage") == stage]
    assert len(losses) == spec.stages[stage]["epochs"] and all(math.isfinite(v) for v in losses), losses
    store = fresh_store(stage1, tmp_path / "stopped")
    stop = spec.stages[stage]["epochs"] // 2
    with monkeypatch.context() as patch:
        patch.setattr(type(methods.get(method)()), "after_epoch", stop_after(stop + 1))
        with pytest.raises(KeyboardInterrupt):
            execute(spec, store, OPTS)
    assert store.run_dir(spec).load_checkpoint()["epoch"] == stop
    resumed = execute(spec, store, OPTS)
    assert resumed["test"]["per_class"] == straight["test"]["per_class"]
    a = torch.load(straight_store.run_dir(spec).model_file, map_location="cpu", weights_only=True)
    b = torch.load(store.run_dir(spec).model_file, map_location="cpu", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), method
    if methods.get(method).stage1:
        check_stage2(method, spec, straight_store, straight)


def test_mislas_stage1_is_a_ce_run_with_mixup():
    spec = spec_of("mislas")
    stage1 = RunSpec.from_json(spec.parent)
    assert stage1.method == "ce" and stage1.stages["train"]["mix"] == "mixup"
    assert stage1.stages["train"].get("mix_alpha", 1.0) == 1.0  # a canonical spec leaves the default out
    assert spec.parent != spec_of("disalign").parent  # not the shared stage 1 of crt, lws, wb, disalign


def _stage1_state(store, spec):
    return torch.load(store.run_dir(RunSpec.from_json(spec.parent)).model_file, map_location="cpu", weights_only=True)


def check_stage2(method, spec, store, result):
    """mislas: convolutions untouched, BatchNorm's running statistics re-estimated, the classifier fine-
    tuned; disalign: backbone and classifier untouched, and model.pt (with its calibration) gives the
    reported test accuracy when evaluated on its own."""
    before, after = _stage1_state(store, spec), torch.load(store.run_dir(spec).model_file, weights_only=True)
    feats = [k for k in before if k.startswith("features.")]
    moved = {k for k in feats if not torch.equal(before[k], after[k])}
    if method == "mislas":
        assert moved and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved), moved
        assert not torch.equal(before["classifier.weight"], after["classifier.linear.weight"])
        assert not torch.equal(after["classifier.scale"], torch.ones_like(after["classifier.scale"]))
        return
    assert not moved and torch.equal(before["classifier.weight"], after["classifier.linear.weight"])
    assert result["method_record"]["stage2_path"] == result["method_record"]["final_eval"] == "cached_features"
    model = build_backbone(spec.backbone, 10, 1)
    model.classifier = CalibratedLinear(model.classifier)
    model.load_state_dict(after)
    splits = benchmarks.get("digits_lt")().load(spec.data, OPTS.data_root, False, None)
    logits, y = predict(model, splits, "test", torch.device("cpu"))
    report = accuracy_report(logits, y, splits.class_counts, splits.shot_rule)
    assert report["per_class"] == pytest.approx(result["test"]["per_class"], abs=1e-9)
