"""The methods' math, pinned against hand computations written from REFERENCE.md (sections 1 and 4),
and the decoupled methods end to end on digits-LT (shared stage 1, cached vs per-epoch stage 2)."""

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from ltbench.methods.cb import cb_loss, cb_weights
from ltbench.methods.crt import CRT
from ltbench.methods.ldam_drw import LDAMDRW, NormedLinear, ldam_margins
from ltbench.methods.logit_adjust import BalancedSoftmax, LogitAdjusted, LogitAdjustedPosthoc, log_prior
from ltbench.methods.lws import LWS, ScaledLinear
from ltbench.methods.tau_norm import L2Norm, TauNorm, tau_normalized
from ltbench.methods.wb import WB, maxnorm_, maxnorm_radius
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.engine.stage_options import MaxNorm, StageOptions, stage_record
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.method import StageContext
from ltbench.results.store import Store
from ltbench.spec.recipes import TUNED_WEIGHT_DECAY
from ltbench.spec.run_spec import RunSpec, resolve

COUNTS = [100, 10, 1]
OPTS = RunOptions(device="cpu", live_progress=False)
TAU_GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
            1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0]


# ----------------------------------------------------------------------------- helpers

class Toy(nn.Module):
    """A model with the LTModel layout: ``features`` then a linear ``classifier``."""

    def __init__(self, d_in=5, d=4, c=3):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(d_in, d), nn.ReLU())
        self.classifier = nn.Linear(d, c)

    def forward(self, x):
        return self.classifier(self.features(x))


def toy(seed=0, **kw):
    torch.manual_seed(seed)
    return Toy(**kw)


def ctx_for(hp, counts=COUNTS, stage="stage2", epoch=0):
    return StageContext(stage=stage, hp=dict(hp), splits=None, device=torch.device("cpu"),
                        num_classes=len(counts), class_counts=list(counts), epoch=epoch)


def wb_hp(**kw):
    return {**resolve("wb", "digits_lt").stages["stage2"], **kw}


def ce_by_hand(row, y):
    """-log softmax(row)[y] with plain floats."""
    return math.log(sum(math.exp(v) for v in row)) - row[y]


def cb_by_hand(counts, beta):
    """Cui et al.: w_j = (1 - beta) / (1 - beta^n_j), rescaled to sum to C."""
    raw = [(1.0 - beta) / (1.0 - beta ** n) for n in counts]
    return [r * len(counts) / sum(raw) for r in raw]


def row_norms(w):
    return [math.sqrt(sum(float(v) ** 2 for v in row)) for row in w.tolist()]


def engine_hook(hook, model, ctx):
    """What the engine does after a step ("after_step") or an epoch ("after_epoch") of a stage with
    these settings: WB's MaxNorm is the engine's (ltbench.engine.stage_options), the radius taken as the stage starts."""
    rec = stage_record(model, ctx).get("maxnorm")
    if rec is not None and rec["every"] == {"after_step": "step", "after_epoch": "epoch"}[hook]:
        MaxNorm(rec["radius"], rec["every"]).project(model)


def set_rows(linear, rows, bias):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(rows))
        linear.bias.copy_(torch.tensor(bias))


# ----------------------------------------------------------------------------- 1. MaxNorm

def test_maxnorm_projects_long_rows_to_the_radius_and_leaves_short_rows_bit_for_bit():
    torch.manual_seed(0)
    w = torch.randn(12, 7) * torch.linspace(0.2, 3.0, 12)[:, None]
    before = w.clone()
    norms = row_norms(before)
    radius = float(before[5].norm())  # one row lies exactly on the sphere
    maxnorm_(w, radius)
    above = [k for k, n in enumerate(norms) if n > radius]
    assert 0 < len(above) < 12
    for k in range(12):
        if k in above:
            expect = [v * radius / norms[k] for v in before[k].tolist()]  # same direction, length radius
            assert w[k].tolist() == pytest.approx(expect, rel=1e-5, abs=1e-7)
            assert float(w[k].norm()) == pytest.approx(radius, rel=1e-6)
            cos = float(w[k] @ before[k]) / (float(w[k].norm()) * norms[k])
            assert cos == pytest.approx(1.0, abs=1e-6)
        else:
            assert torch.equal(w[k], before[k]), k


def test_maxnorm_by_hand_rows():
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8], [2.0, 0.0], [0.0, -10.0]])
    maxnorm_(w, 2.0)
    assert w[0].tolist() == pytest.approx([1.2, 1.6], rel=1e-6)
    assert w[1].tolist() == [0.6000000238418579, 0.800000011920929]  # float32 of 0.6, 0.8: untouched
    assert w[2].tolist() == [2.0, 0.0]  # exactly on the ball: untouched
    assert w[3].tolist() == pytest.approx([0.0, -2.0], rel=1e-6)


@pytest.mark.parametrize("t, expected", [(0.1, 1.0 + 0.1 * (5.0 - 1.0)), (0.0, 1.0), (1.0, 5.0)])
def test_maxnorm_radius_is_min_plus_t_times_range(t, expected):
    w = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 4.0], [1.0, 0.0, 0.0], [0.0, 1.8, 2.4]])  # norms 2, 5, 1, 3
    assert maxnorm_radius(w, t) == pytest.approx(expected, rel=1e-6)


ROWS = [[3.0, 4.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]  # norms 5, 1, 2
BIAS = [7.0, -3.0, 11.0]  # larger than any radius: must stay free


@pytest.mark.parametrize("t, radius", [(0.1, 1.4), (0.0, 1.0), (1.0, 5.0)])
def test_wb_after_step_projects_the_weight_and_never_the_bias(t, radius):
    model = toy()
    set_rows(model.classifier, ROWS, BIAS)
    ctx = ctx_for(wb_hp(threshold=t, maxnorm=True, maxnorm_every="step"))
    WB().prepare(model, ctx)
    ctx.options = StageOptions.start(WB(), ctx, model)  # as the engine does, after prepare
    WB().finalize(model, ctx)
    assert ctx.options.radius == ctx.record["maxnorm_radius"] == pytest.approx(radius, rel=1e-6)
    assert ctx.record["stage1_classifier_norms"] == pytest.approx([5.0, 1.0, 2.0], rel=1e-6)
    assert all(not p.requires_grad for p in model.features.parameters())
    bias_before = model.classifier.bias.detach().clone()
    w_before = model.classifier.weight.detach().clone()
    engine_hook("after_step", model, ctx)
    w = model.classifier.weight.detach()
    for k, n in enumerate([5.0, 1.0, 2.0]):
        if n > radius:
            assert w[k].tolist() == pytest.approx([v * radius / n for v in ROWS[k]], rel=1e-6, abs=1e-7)
        else:
            assert torch.equal(w[k], w_before[k])
    assert torch.equal(model.classifier.bias.detach(), bias_before)


def test_wb_maxnorm_every_epoch_projects_only_after_the_epoch():
    model = toy()
    set_rows(model.classifier, ROWS, BIAS)
    ctx = ctx_for(wb_hp(threshold=0.1, maxnorm=True, maxnorm_every="epoch"))
    wb = WB()
    wb.prepare(model, ctx)
    before = model.classifier.weight.detach().clone()
    engine_hook("after_step", model, ctx)
    assert torch.equal(model.classifier.weight.detach(), before)
    engine_hook("after_epoch", model, ctx)
    assert row_norms(model.classifier.weight.detach()) == pytest.approx([1.4, 1.0, 1.4], rel=1e-6)
    assert model.classifier.bias.tolist() == BIAS


def test_wb_per_step_does_not_project_after_epoch_and_maxnorm_false_never_projects():
    for hp, hooks in ((wb_hp(maxnorm_every="step"), ("after_epoch",)),
                      (wb_hp(maxnorm=False, maxnorm_every="step"), ("after_step", "after_epoch")),
                      (wb_hp(maxnorm=False, maxnorm_every="epoch"), ("after_step", "after_epoch"))):
        model = toy()
        set_rows(model.classifier, ROWS, BIAS)
        ctx = ctx_for(hp)
        wb = WB()
        wb.prepare(model, ctx)
        for hook in hooks:
            engine_hook(hook, model, ctx)
        assert model.classifier.weight.tolist() == ROWS


def test_wb_prepare_class_weights_follow_the_loss():
    model = toy()
    ctx = ctx_for(wb_hp(loss="cb", beta=0.9))
    WB().prepare(model, ctx)
    assert ctx.state["class_weights"].tolist() == pytest.approx(cb_by_hand(COUNTS, 0.9), rel=1e-6)
    ctx = ctx_for(wb_hp(loss="ce"))
    WB().prepare(toy(), ctx)
    assert ctx.state["class_weights"].tolist() == [1.0, 1.0, 1.0]
    # param_groups: the classifier's weight and bias, with stage 2's weight decay
    groups = WB().param_groups(model, ctx)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    assert {id(p) for p in groups[0]["params"]} == {id(model.classifier.weight), id(model.classifier.bias)}


# ----------------------------------------------------------------------------- 2. CB weights

@pytest.mark.parametrize("beta, expected", [
    # (1 - beta) / (1 - beta^n) for n = 100, 10, 1, then * 3 / sum, computed by hand:
    # beta 0.9:    raw = 0.1/(1-0.9^100)=0.1000026563, 0.1/(1-0.9^10)=0.1535340, 0.1/0.1=1
    (0.9, [0.2393292360088335, 0.3674419730958617, 2.3932287908953045]),
    # beta 0.99:   raw = 0.01/(1-0.99^100)=0.0158198, 0.01/(1-0.99^10)=0.1048907, 1
    (0.99, [0.04223746876318659, 0.28004361300256353, 2.67771891823425]),
    # beta 0.9999: raw = 1e-4/(1-0.9999^100)=0.00100496, 1e-4/(1-0.9999^10)=0.0100045, 1
    (0.9999, [0.027158721622260334, 0.2703688739931705, 2.7024724043845696]),
])
def test_cb_weights_by_hand(beta, expected):
    raw = [(1 - beta) / (1 - beta ** 100), (1 - beta) / (1 - beta ** 10), (1 - beta) / (1 - beta ** 1)]
    by_hand = [r * 3 / (raw[0] + raw[1] + raw[2]) for r in raw]
    assert by_hand == pytest.approx(expected, rel=1e-12)
    w = cb_weights(COUNTS, beta)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-6)


def test_cb_weights_beta_zero_is_all_ones_and_weights_sum_to_c():
    assert cb_weights([500, 37, 5, 2], 0.0).tolist() == [1.0, 1.0, 1.0, 1.0]
    for beta in (0.5, 0.999, 0.9999):
        counts = [500, 200, 37, 5, 2]
        w = cb_weights(counts, beta)
        assert float(w.sum()) == pytest.approx(5.0, rel=1e-6)
        assert w.tolist() == pytest.approx(cb_by_hand(counts, beta), rel=1e-6)
        assert all(a <= b for a, b in zip(w.tolist(), w.tolist()[1:], strict=False))  # rarer class, no smaller weight


def test_cb_weights_class_without_images_gets_zero():
    w = cb_weights([5, 0, 1], 0.9)
    raw = [0.1 / (1 - 0.9 ** 5), 0.1 / (1 - 0.9)]
    assert w.tolist() == pytest.approx([raw[0] * 3 / sum(raw), 0.0, raw[1] * 3 / sum(raw)], rel=1e-6)


# ----------------------------------------------------------------------------- 3. CB loss forms

LOGITS = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
TARGETS = [0, 2]


def test_cb_loss_softmax_is_weighted_mean_of_ce():
    w = cb_by_hand(COUNTS, 0.9)
    expected = (w[0] * ce_by_hand(LOGITS[0], 0) + w[2] * ce_by_hand(LOGITS[1], 2)) / 2
    got = cb_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w), "softmax")
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(cb_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w))) == pytest.approx(
        expected, rel=1e-6)  # the default form


def test_cb_loss_softmax_bce_is_the_authors_form():
    w = cb_by_hand(COUNTS, 0.9)
    b, c = 2, 3
    total = 0.0
    for row, y in zip(LOGITS, TARGETS, strict=True):
        z = sum(math.exp(v) for v in row)
        for j in range(c):
            p = math.exp(row[j]) / z
            t = 1.0 if j == y else 0.0
            total += w[y] * (t * math.log(p) + (1 - t) * math.log(1 - p))
    expected = -total / (b * c)
    got = cb_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w), "softmax_bce")
    assert float(got) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        cb_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), torch.tensor(w), "focal")


def test_cb_method_loss_uses_weights_of_its_beta():
    from ltbench.methods.cb import CB

    hp = {**resolve("cb", "digits_lt").stages["train"], "beta": 0.99}
    ctx = ctx_for(hp, stage="train")
    CB().prepare(toy(), ctx)
    w = cb_by_hand(COUNTS, 0.99)
    expected = (w[0] * ce_by_hand(LOGITS[0], 0) + w[2] * ce_by_hand(LOGITS[1], 2)) / 2
    assert float(CB().loss(torch.tensor(LOGITS), torch.tensor(TARGETS), ctx)) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- 4. tau-norm

W_TAU = [[3.0, 4.0], [0.0, 0.25], [1.0, 1.0], [-2.0, 0.5]]


def test_tau_normalized_at_0_half_and_1():
    w = torch.tensor(W_TAU)
    assert torch.equal(tau_normalized(w, 0.0), w)
    assert row_norms(tau_normalized(w, 1.0)) == pytest.approx([1.0] * 4, rel=1e-6)
    half = tau_normalized(w, 0.5)
    for k, row in enumerate(W_TAU):
        n = math.sqrt(row[0] ** 2 + row[1] ** 2)
        assert half[k].tolist() == pytest.approx([v / math.sqrt(n) for v in row], rel=1e-6)
    t19 = tau_normalized(w, 1.9)
    assert row_norms(t19) == pytest.approx([math.hypot(*r) ** (1 - 1.9) for r in W_TAU], rel=1e-5)


def test_tau_grid_and_l2_grid():
    hp = TauNorm().hparams("posthoc", "paper", "digits")
    taus = TauNorm().taus(hp)
    assert len(taus) == 21
    assert taus == TAU_GRID  # exact decimals, no 0.30000000000000004
    assert L2Norm().taus(L2Norm().hparams("posthoc", "paper", "digits")) == [1.0]


# ----------------------------------------------------------------------------- 5. LWS

def test_scaled_linear_starts_as_the_linear_and_trains_only_the_scale():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    w0, b0 = linear.weight.detach().clone(), linear.bias.detach().clone()
    x = torch.randn(9, 6)
    ref = x @ w0.T + b0
    expected_logits = linear(x).detach()
    sl = ScaledLinear(linear)
    assert torch.equal(sl(x).detach(), expected_logits)
    assert torch.allclose(sl(x), ref, atol=1e-6)
    assert torch.equal(sl.weight.detach(), w0)
    assert [n for n, p in sl.named_parameters() if p.requires_grad] == ["scale"]
    # z = s * (W f + b), the scale per class
    s = [0.5, 2.0, 1.0, 3.0]
    with torch.no_grad():
        sl.scale.copy_(torch.tensor(s))
    z = sl(x).detach()
    for i in range(9):
        for k in range(4):
            by_hand = s[k] * (sum(float(x[i, d]) * float(w0[k, d]) for d in range(6)) + float(b0[k]))
            assert float(z[i, k]) == pytest.approx(by_hand, rel=1e-5, abs=1e-6)


def test_lws_prepare_freezes_features_and_returns_only_the_scale():
    model = toy()
    w0 = model.classifier.weight.detach().clone()
    hp = resolve("lws", "digits_lt").stages["stage2"]
    ctx = ctx_for(hp)
    LWS().prepare(model, ctx)
    assert isinstance(model.classifier, ScaledLinear)
    assert all(not p.requires_grad for p in model.features.parameters())
    assert torch.equal(model.classifier.weight.detach(), w0)
    groups = LWS().param_groups(model, ctx)
    assert len(groups) == 1 and len(groups[0]["params"]) == 1
    assert groups[0]["params"][0] is model.classifier.scale
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.scale"]
    LWS().prepare(model, ctx)  # again (resume): not wrapped twice
    assert isinstance(model.classifier.linear, nn.Linear)


# ----------------------------------------------------------------------------- 6. cRT

def test_crt_prepare_reinitialises_classifier_and_freezes_features():
    model = toy()
    with torch.no_grad():
        model.classifier.weight.fill_(5.0)
        model.classifier.bias.fill_(5.0)
    feats = {k: v.clone() for k, v in model.features.state_dict().items()}
    ctx = ctx_for(resolve("crt", "digits_lt").stages["stage2"])
    torch.manual_seed(1)
    CRT().prepare(model, ctx)
    w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    bound = 1 / math.sqrt(4)  # nn.Linear's default init bound for fan_in 4
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.abs().max()) < 5.0
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(torch.equal(v, feats[k]) for k, v in model.features.state_dict().items())
    groups = CRT().param_groups(model, ctx)
    assert {id(p) for p in groups[0]["params"]} == {id(model.classifier.weight), id(model.classifier.bias)}
    assert groups[0]["weight_decay"] == ctx.hp["weight_decay"]


# ----------------------------------------------------------------------------- 7. LDAM-DRW

def test_ldam_margins_by_hand():
    # 0.5 * n^(-1/4) / max_k n_k^(-1/4); the rarest class (n = 1) has n^(-1/4) = 1, the maximum
    expected = [0.5 * 100 ** -0.25 / 1.0, 0.5 * 10 ** -0.25 / 1.0, 0.5]
    assert expected == pytest.approx([0.15811388300841897, 0.28117066259517454, 0.5], rel=1e-12)
    assert ldam_margins(COUNTS, 0.5).tolist() == pytest.approx(expected, rel=1e-6)
    m = ldam_margins([400, 25, 16], 0.3)
    assert m.tolist() == pytest.approx([0.3 * 400 ** -0.25 / 16 ** -0.25, 0.3 * 25 ** -0.25 / 16 ** -0.25, 0.3],
                                       rel=1e-6)


COS = [[0.2, -0.5, 0.9], [0.7, 0.1, -0.3], [-0.2, 0.4, 0.6]]
COS_Y = [2, 0, 1]


def test_ldam_drw_loss_before_and_after_the_drw_epoch():
    hp = {**resolve("ldam_drw", "digits_lt").stages["train"], "epochs": 10, "drw_start": 0.8,
          "max_m": 0.5, "s": 30.0, "beta": 0.9999}
    model = toy()
    ctx = ctx_for(hp, stage="train")
    method = LDAMDRW()
    method.prepare(model, ctx)
    assert isinstance(model.classifier, NormedLinear)
    m = [0.5 * 100 ** -0.25, 0.5 * 10 ** -0.25, 0.5]
    per = []
    for row, y in zip(COS, COS_Y, strict=True):
        adj = [30.0 * (v - (m[y] if j == y else 0.0)) for j, v in enumerate(row)]
        per.append(ce_by_hand(adj, y))
    plain = sum(per) / 3
    w = cb_by_hand(COUNTS, 0.9999)
    weighted = sum(w[y] * ce for y, ce in zip(COS_Y, per, strict=True)) / sum(w[y] for y in COS_Y)
    assert abs(plain - weighted) > 0.1  # the two regimes are distinguishable on this example
    logits, y = torch.tensor(COS), torch.tensor(COS_Y)
    for epoch, expected in ((0, plain), (7, plain), (8, weighted), (9, weighted)):
        ctx.epoch = epoch
        assert float(method.loss(logits, y, ctx)) == pytest.approx(expected, rel=1e-5), epoch


def test_normed_linear_gives_cosines():
    torch.manual_seed(0)
    layer = NormedLinear(4, 3)
    x = torch.randn(5, 4)
    z = layer(x).detach()
    w = layer.weight.detach()
    for i in range(5):
        for k in range(3):
            cos = float(x[i] @ w[k]) / (float(x[i].norm()) * float(w[k].norm()))
            assert float(z[i, k]) == pytest.approx(cos, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- 8. logit adjustment

def test_log_prior_is_the_log_of_the_class_frequencies():
    lp = log_prior(COUNTS)
    assert float(lp.exp().sum()) == pytest.approx(1.0, rel=1e-6)
    assert lp.tolist() == pytest.approx([math.log(100 / 111), math.log(10 / 111), math.log(1 / 111)], rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_logit_adjusted_loss_is_ce_on_shifted_logits(tau):
    ctx = ctx_for({**resolve("logit_adj", "digits_lt").stages["train"], "tau": tau}, stage="train")
    LogitAdjusted().prepare(toy(), ctx)
    lp = [math.log(n / 111) for n in COUNTS]
    expected = sum(ce_by_hand([v + tau * lp[j] for j, v in enumerate(row)], y)
                   for row, y in zip(LOGITS, TARGETS, strict=True)) / 2
    got = LogitAdjusted().loss(torch.tensor(LOGITS), torch.tensor(TARGETS), ctx)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_balanced_softmax_is_tau_one():
    assert BalancedSoftmax().hparams("train", "paper", "digits")["tau"] == 1.0


def test_logit_adj_posthoc_subtracts_tau_log_prior_from_the_bias():
    model = toy()
    set_rows(model.classifier, ROWS, BIAS)
    ctx = ctx_for({"tau": 0.7}, stage="posthoc")
    LogitAdjustedPosthoc().finalize(model, ctx)
    expected = [b - 0.7 * math.log(n / 111) for b, n in zip(BIAS, COUNTS, strict=True)]
    assert model.classifier.bias.tolist() == pytest.approx(expected, rel=1e-6)
    assert model.classifier.weight.tolist() == ROWS
    assert LogitAdjustedPosthoc().trains("posthoc") is False


# ----------------------------------------------------------------------------- 9. end to end on digits-LT

STAGE2 = ["stage2.epochs=2"]


def decoupled_spec(method, extra=()):
    return resolve(method, "digits_lt", epochs=2, sets=([] if method == "tau_norm" else STAGE2) + list(extra))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """wb, crt, lws and tau_norm on digits-LT with 2 stage-1 and 2 stage-2 epochs, one store."""
    root = tmp_path_factory.mktemp("shared")
    store = Store(root)
    specs = {m: decoupled_spec(m) for m in ("wb", "crt", "lws", "tau_norm")}
    results = {m: execute(s, store, OPTS) for m, s in specs.items()}
    ce_spec = RunSpec.from_json(specs["wb"].parent)
    return {"root": root, "store": store, "specs": specs, "results": results, "ce_spec": ce_spec,
            "ce_dir": store.run_dir(ce_spec)}


def load_model(store, spec):
    return torch.load(store.run_dir(spec).model_file, map_location="cpu", weights_only=True)


def features_of(state):
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_decoupled_methods_share_one_stage1_run(shared):
    specs, store, results = shared["specs"], shared["store"], shared["results"]
    parents = [s.parent for s in specs.values()]
    assert all(p == parents[0] for p in parents) and parents[0] is not None
    ce_spec = shared["ce_spec"]
    assert ce_spec.method == "ce" and ce_spec.stages["train"]["epochs"] == 2
    assert ce_spec.stages["train"]["weight_decay"] == TUNED_WEIGHT_DECAY["digits"]  # WB's tuned stage-1 WD
    runs = store.runs()
    by_method = sorted(r.path.parent.name for r in runs)
    assert by_method == ["ce", "crt", "lws", "tau_norm", "wb"]
    ce_runs = [r for r in runs if r.path.parent.name == "ce"]
    assert len(ce_runs) == 1 and ce_runs[0].run_id == ce_spec.run_id and ce_runs[0].is_done()
    for m, r in results.items():
        assert r["method_record"]["parent"] == ce_spec.run_id, m
        assert r["run_id"] == specs[m].run_id and store.run_dir(specs[m]).is_done()
    # the stage-1 backbone is frozen in every stage 2 (BN running statistics included)
    ce_state = torch.load(shared["ce_dir"].model_file, map_location="cpu", weights_only=True)
    for m, spec in specs.items():
        state = features_of(load_model(store, spec))
        assert state.keys() == features_of(ce_state).keys()
        assert all(torch.equal(v, ce_state[k]) for k, v in state.items()), m


def test_lws_keeps_the_stage1_classifier_and_crt_retrains_it(shared):
    store, specs = shared["store"], shared["specs"]
    ce_state = torch.load(shared["ce_dir"].model_file, map_location="cpu", weights_only=True)
    lws = load_model(store, specs["lws"])
    assert torch.equal(lws["classifier.linear.weight"], ce_state["classifier.weight"])
    assert torch.equal(lws["classifier.linear.bias"], ce_state["classifier.bias"])
    # the recorded norms are those of the effective rows s_k * w_k
    eff = lws["classifier.scale"][:, None] * lws["classifier.linear.weight"]
    assert shared["results"]["lws"]["classifier_norms"] == pytest.approx(eff.norm(dim=1).tolist(), rel=1e-5)
    crt = load_model(store, specs["crt"])
    assert (crt["classifier.weight"] - ce_state["classifier.weight"]).abs().max() > 1e-2


def _copy_stage1(shared, root):
    rel = shared["ce_dir"].path.relative_to(shared["root"])
    shutil.copytree(shared["ce_dir"].path, root / rel)
    return Store(root)


def test_cached_features_and_frozen_backbone_give_the_same_classifier(shared, tmp_path):
    results, states = {}, {}
    ce_state = torch.load(shared["ce_dir"].model_file, map_location="cpu", weights_only=True)
    for flag in ("true", "false"):
        store = _copy_stage1(shared, tmp_path / flag)  # both start from the very same stage-1 weights
        spec = decoupled_spec("wb", [f"stage2.cache_features={flag}", "stage2.lr=0.1"])
        assert spec.parent == shared["specs"]["wb"].parent
        results[flag] = execute(spec, store, OPTS)
        states[flag] = load_model(store, spec)
        assert [r.path.parent.name for r in store.runs()] == ["ce", "wb"]  # stage 1 was reused, not rerun
    assert results["true"]["method_record"]["stage2_path"] == "cached_features"
    assert results["false"]["method_record"]["stage2_path"] == \
        "frozen_backbone_per_epoch (augment false, BatchNorm in eval mode)"
    assert results["true"]["classifier_norms"] == pytest.approx(results["false"]["classifier_norms"], abs=1e-5)
    for key in ("classifier.weight", "classifier.bias"):
        assert torch.allclose(states["true"][key], states["false"][key], atol=1e-5), key
    # stage 2 did train (the comparison is not between two untouched copies of stage 1)
    assert (states["true"]["classifier.bias"] - ce_state["classifier.bias"]).abs().max() > 1e-3
    for flag in ("true", "false"):
        assert all(torch.equal(v, ce_state[k]) for k, v in features_of(states[flag]).items()), flag


def test_stage2_runs_share_the_features_kept_in_their_stage1_run(shared, tmp_path):
    """wb ran first and extracted the features into the stage-1 run's features/ folder; crt and lws
    read them from there. A run on kept features equals, bit for bit, one that extracts afresh."""
    recs = {m: shared["results"][m]["method_record"] for m in ("wb", "crt", "lws")}
    kept = sorted((shared["ce_dir"].path / "features").glob("*.pt"))
    assert len(kept) == 1
    assert recs["wb"]["stage2_features"] == "extracted"
    assert recs["crt"]["stage2_features"] == recs["lws"]["stage2_features"] == f"reused {kept[0].stem}"
    assert shared["results"]["tau_norm"]["method_record"]["posthoc_features"] == f"reused {kept[0].stem}"
    for m in ("wb", "crt", "lws", "tau_norm"):  # the unchanged backbone's features serve the final report too
        assert shared["results"][m]["method_record"]["final_eval"] == "cached_features", m
    store = _copy_stage1(shared, tmp_path / "fresh")
    fresh = execute(decoupled_spec("crt"), store, dataclasses.replace(OPTS, keep_features=False))
    assert fresh["method_record"]["stage2_features"] == "extracted"
    assert fresh["classifier_norms"] == shared["results"]["crt"]["classifier_norms"]
    assert fresh["test"]["per_class"] == shared["results"]["crt"]["test"]["per_class"]
    # a damaged file is not trusted: the run extracts again and replaces it
    damaged = store.run_dir(shared["ce_spec"]).path / "features" / kept[0].name
    damaged.write_bytes(b"not a torch file")
    again = execute(decoupled_spec("crt"), store, OPTS, force=True)
    assert again["method_record"]["stage2_features"].startswith(f"extracted again (the kept file {kept[0].name} "
                                                                "was damaged (its sha256 ")
    assert again["classifier_norms"] == fresh["classifier_norms"]
    assert execute(decoupled_spec("lws"), store, OPTS)["method_record"]["stage2_features"] == f"reused {kept[0].stem}"


def test_wb_stage2_classifier_obeys_maxnorm(shared):
    store, spec = shared["store"], shared["specs"]["wb"]
    record = shared["results"]["wb"]["method_record"]
    ce_w = torch.load(shared["ce_dir"].model_file, map_location="cpu", weights_only=True)["classifier.weight"]
    n1 = np.linalg.norm(ce_w.double().numpy(), axis=1)
    radius = n1.min() + 0.1 * (n1.max() - n1.min())
    assert record["maxnorm_radius"] == pytest.approx(radius, rel=1e-5)
    assert record["stage1_classifier_norms"] == pytest.approx(n1.tolist(), rel=1e-5)
    w = load_model(store, spec)["classifier.weight"]
    norms = np.linalg.norm(w.double().numpy(), axis=1)
    assert (norms <= record["maxnorm_radius"] + 1e-5).all()
    assert (n1 > radius + 1e-3).sum() >= len(n1) // 2  # stage 1 had rows outside the ball: the constraint acted
    assert shared["results"]["wb"]["classifier_norms"] == pytest.approx(norms.tolist(), rel=1e-5)


def test_tau_norm_record_and_saved_classifier(shared):
    store, spec = shared["store"], shared["specs"]["tau_norm"]
    record = shared["results"]["tau_norm"]["method_record"]
    assert record["tau"] in TAU_GRID
    curve = record["tau_curve"]
    assert len(curve) == 21 and [r["tau"] for r in curve] == TAU_GRID
    assert all(isinstance(r["val"], float) and isinstance(r["test"], float) for r in curve)
    vals = [r["val"] for r in curve]
    assert record["tau"] == TAU_GRID[vals.index(max(vals))]  # the first best on val
    state = load_model(store, spec)
    assert torch.equal(state["classifier.bias"], torch.zeros_like(state["classifier.bias"]))
    ce_w = torch.load(shared["ce_dir"].model_file, map_location="cpu", weights_only=True)["classifier.weight"]
    w1 = ce_w.double().numpy()
    expected = w1 / np.linalg.norm(w1, axis=1, keepdims=True) ** record["tau"]
    assert np.allclose(state["classifier.weight"].double().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_table1_rows_are_hyperparameters(shared, tmp_path):
    base = shared["specs"]["wb"]
    variants = [["stage2.loss=ce"], ["stage2.weight_decay=0"], ["stage2.maxnorm=false"],
                ["stage2.loss=ce", "stage2.weight_decay=0", "stage2.maxnorm=false"]]
    specs = [decoupled_spec("wb", v) for v in variants]
    ids = {s.run_id for s in specs} | {base.run_id}
    assert len(ids) == 5
    assert all(s.parent == base.parent for s in specs)
    hp = specs[-1].stages["stage2"]
    assert hp["loss"] == "ce" and hp["weight_decay"] == 0.0 and hp["maxnorm"] is False
    # maxnorm=false really trains without the constraint: rows keep norms above the radius
    r = execute(specs[2], _copy_stage1(shared, tmp_path), OPTS)
    assert r["method_record"]["parent"] == shared["ce_spec"].run_id
    assert max(r["classifier_norms"]) > r["method_record"]["maxnorm_radius"] + 0.05


# ----------------------------------------------------------------------------- 10. bad input

BAD = [
    ("wb", ["stage2.weight_decay=-1"], "weight_decay"),
    ("wb", ["stage1.weight_decay=-1"], "weight_decay"),
    ("wb", ["stage2.beta=1.0"], "beta"),
    ("wb", ["stage2.beta=-0.1"], "beta"),
    ("cb", ["train.beta=1.0"], "beta"),
    ("cb", ["train.beta=-0.1"], "beta"),
    ("cb", ["train.weight_decay=-1"], "weight_decay"),
    ("wb", ["stage2.threshold=-0.1"], "threshold"),
    ("wb", ["stage2.loss=focal"], "loss"),
]


@pytest.mark.parametrize("method, sets, key", BAD)
def test_bad_hyperparameters_are_rejected_before_anything_runs(method, sets, key, tmp_path):
    with pytest.raises(LtbenchError, match=key):
        resolve(method, "digits_lt", epochs=2, sets=sets)
    results = tmp_path / "results"
    args = ["run", "--method", method, "--epochs", "2", "--device", "cpu", "--results", str(results)]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert not results.exists()  # nothing written, not even the results root


def test_stage1_run_must_be_a_ce_run_of_the_same_benchmark(shared):
    store = shared["store"]
    before = sorted(str(r.path) for r in store.runs())
    ce_json = shared["ce_dir"].spec()
    # the positive control: the finished ce run is exactly the stage 1 that wb resolved by itself
    assert resolve("wb", "digits_lt", sets=STAGE2, stage1_run=ce_json).run_id == shared["specs"]["wb"].run_id
    with pytest.raises(LtbenchError) as exc:
        resolve("wb", "cifar100_lt", stage1_run=ce_json)
    msg = str(exc.value)
    assert "digits" in msg and "cifar100_lt" in msg
    wb_json = store.run_dir(shared["specs"]["wb"]).spec()
    with pytest.raises(LtbenchError, match="ce"):
        resolve("wb", "digits_lt", stage1_run=wb_json)
    with pytest.raises(LtbenchError):
        resolve("crt", "digits_lt", stage1_run=store.run_dir(shared["specs"]["lws"]).spec())
    assert sorted(str(r.path) for r in store.runs()) == before
