"""The engine's training tricks (ltbench.engine.stage_options): mixup / cutmix, label smoothing, class re-weighting (DRW),
re-sampling (DRS), AutoAugment / RandAugment and MaxNorm as stage options, against hand computations and
torch's / torchvision's own; resume determinism; run ids unchanged; short digits-LT runs with each option."""

import math

import pytest
import torch
import torch.nn.functional as F
from ltbench.methods.cb import cb_loss, cb_weights

from ltbench.data.autoaugment import augmentation_policy
from ltbench.data.images import ImageTransform
from ltbench.data.splits import Augment, ImageSet, Splits, per_epoch_generator
from ltbench.engine import training as engine
from ltbench.engine.stage_options import (
    Mixer,
    StageOptions,
    class_balanced_weights,
    class_mean_loss,
    cross_entropy_loss,
    cutmix_box,
    reweighted_loss,
    smoothed_loss,
    stage_loss,
    stage_record,
    switch_epoch,
)
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.method import Method, StageContext, check_hparam_names
from ltbench.registry import methods
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)
CPU = torch.device("cpu")
# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; ltbench pins torchvision <= 0.29.1
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def ce(out, t):
    return F.cross_entropy(out, t)


def ce_by_hand(row, y):
    """-log softmax(row)[y] with plain floats."""
    return math.log(sum(math.exp(v) for v in row)) - row[y]


class PlainCE(Method):
    """Cross-entropy through an overridden loss: the options' generic path (not the CE shortcut)."""

    name = "plain_ce_test"

    def loss(self, logits, targets, ctx):
        return F.cross_entropy(logits, targets)


def ctx_for(**hp):
    base = {**resolve("ce", "digits_lt").stages["train"], **hp}
    return StageContext(stage="train", hp=base, splits=None, device=CPU, num_classes=4, class_counts=[8, 4, 2, 1])


# ----------------------------------------------------------------------------- mixing

def test_mixup_mixes_with_the_rolled_batch_and_its_loss_is_the_lam_weighted_pair():
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0], [-1.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    mixer = Mixer("mixup", [0.3], [(0.5, 0.5)])
    mixed, pairs = mixer.mix(0, x, y)
    # sample i: 0.3 x_i + 0.7 x_{i-1} (the partner of sample 0 is the last)
    hand = [0.3 * 1 + 0.7 * -1, 0.3 * 2 + 0, 0.3 * 3 + 0.7 * 1, 0.3 * 5 + 0.7 * 2, 0.3 * -1 + 0.7 * 3, 0.7 * 5]
    assert mixed.flatten().tolist() == pytest.approx(hand, rel=1e-6)
    assert pairs.tolist() == [[0, 1], [2, 0], [1, 2]]
    out = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 3.0], [0.0, 1.0, 0.0]])
    by_hand = sum(0.3 * ce_by_hand(r, a) + 0.7 * ce_by_hand(r, b) for r, (a, b) in zip(out.tolist(), pairs.tolist(),
                                                                                     strict=True)) / 3
    assert float(mixer.loss(ce, out, pairs)) == pytest.approx(by_hand, rel=1e-6)
    # argmax 0, 2, 1: sample 0 hits its own label (0.3), 1 its own (0.3), 2 its own (0.3)
    assert float(mixer.hits(out, pairs)) == pytest.approx(0.9)
    # torchvision's MixUp with the same lam: the same images, and its soft labels give the same CE
    from torchvision.transforms import v2

    tv = v2.MixUp(num_classes=3)
    params = {"lam": 0.3, "labels": y, "batch_size": 3}
    assert torch.allclose(tv.transform(x.view(3, 1, 1, 2).clone(), params).view(3, 2), mixed)
    soft = tv.transform(y, params)
    assert float(F.cross_entropy(out, soft)) == pytest.approx(by_hand, rel=1e-6)


def test_cutmix_box_area_and_corrected_lam():
    # lam 0.75 on 8x8 centred at (4, 4): r = sqrt(0.25)/2 = 0.25, half sides int(2) = 2 -> box 4x4
    assert cutmix_box(0.75, (0.5, 0.5), 8, 8) == ((2, 2, 6, 6), 1 - 16 / 64)
    # centred at the corner the box is clipped: 2x2 of the 8x8 image, lam' = 1 - 4/64
    assert cutmix_box(0.75, (0.0, 0.0), 8, 8) == ((0, 0, 2, 2), 1 - 4 / 64)
    # a non-square image: 6 rows, 10 columns, lam 0.36: r = 0.4, half sides int(4) = 4 and int(2.4) = 2
    box, lam = cutmix_box(0.36, (0.95, 0.99), 6, 10)  # centre column 9, row 5
    assert box == (5, 3, 10, 6) and lam == pytest.approx(1 - 5 * 3 / 60)


def test_cutmix_pastes_the_partners_box_like_torchvision():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    y = torch.tensor([3, 1, 0, 2])
    mixer = Mixer("cutmix", [0.75], [(0.5, 0.5)])
    mixed, pairs = mixer.mix(0, x, y)
    assert mixer.lam == 0.75 and pairs[:, 1].tolist() == [2, 3, 1, 0]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    for i in range(4):
        assert torch.equal(mixed[i][:, inside], x[i - 1][:, inside])
        assert torch.equal(mixed[i][:, ~inside], x[i][:, ~inside])
    from torchvision.transforms import v2

    params = {"box": (2, 2, 6, 6), "lam_adjusted": 0.75, "labels": y, "batch_size": 4}
    assert torch.equal(v2.CutMix(num_classes=4).transform(x, params), mixed)
    with pytest.raises(LtbenchError, match="cutmix needs images"):
        mixer.mix(0, torch.randn(4, 16), y)


def test_mixer_draws_come_from_the_epoch_generator_and_leave_torchs_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = Mixer.draw("mixup", 1.0, per_epoch_generator(0, 3), 2000)
    assert torch.equal(torch.get_rng_state(), state)
    b = Mixer.draw("mixup", 1.0, per_epoch_generator(0, 3), 2000)
    c = Mixer.draw("mixup", 1.0, per_epoch_generator(0, 4), 2000)
    assert a == b and a.lams != c.lams
    assert all(0 <= v <= 1 for v in a.lams)
    mean = sum(a.lams) / len(a.lams)  # Beta(1, 1) is uniform: mean 1/2, variance 1/12
    var = sum((v - mean) ** 2 for v in a.lams) / len(a.lams)
    assert mean == pytest.approx(0.5, abs=0.03) and var == pytest.approx(1 / 12, abs=0.01)
    small = Mixer.draw("mixup", 0.2, per_epoch_generator(0, 3), 2000)  # Beta(0.2, 0.2): mostly near 0 or 1
    assert sum(min(v, 1 - v) < 0.1 for v in small.lams) > 0.6 * 2000


# ----------------------------------------------------------------------------- losses

@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_label_smoothing_equals_torchs_for_ce(eps):
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(7, 5, generator=g), torch.randint(0, 5, (7,), generator=g)
    want = F.cross_entropy(out, y, label_smoothing=eps)
    assert torch.allclose(smoothed_loss(ce, out, y, eps, 5), want, atol=1e-6)  # the generic path
    assert torch.allclose(cross_entropy_loss(out, y, eps, None), want)  # the CE shortcut
    ctx = ctx_for(label_smoothing=eps)
    ctx.num_classes = 5
    assert torch.allclose(stage_loss(PlainCE(), ctx, None)(out, y), want, atol=1e-6)
    # by hand for one sample: (1 - eps) CE(y) + eps mean_k CE(k)
    row = out[0].tolist()
    hand = (1 - eps) * ce_by_hand(row, int(y[0])) + eps * sum(ce_by_hand(row, k) for k in range(5)) / 5
    assert float(smoothed_loss(ce, out[:1], y[:1], eps, 5)) == pytest.approx(hand, rel=1e-6)


def test_class_mean_loss_is_exact_for_any_loss_vmap_or_not():
    g = torch.Generator().manual_seed(2)
    out = torch.randn(6, 4, generator=g)
    w = cb_weights([8, 4, 2, 1], 0.9)

    def cb(o, t):
        return cb_loss(o, t, w)

    def weighted(o, t):  # a weighted mean (not a plain mean over samples)
        return F.cross_entropy(o, t, weight=w)

    def not_vmappable(o, t):  # .item() cannot run under vmap: the loop fallback
        return F.cross_entropy(o, t) * (1.0 + 0 * float(t.float().sum().item()))

    for loss in (cb, weighted, not_vmappable):
        loop = sum(float(loss(out, torch.full((6,), k))) for k in range(4)) / 4
        assert float(class_mean_loss(loss, out, 6, 4, CPU)) == pytest.approx(loop, rel=1e-6)


def test_reweighting_equals_weighted_ce_and_the_per_class_definition():
    g = torch.Generator().manual_seed(3)
    out, y = torch.randn(9, 4, generator=g), torch.tensor([0, 0, 1, 3, 0, 1, 1, 0, 3])
    w = class_balanced_weights([8, 4, 2, 1], 0.99)
    assert torch.allclose(w, cb_weights([8, 4, 2, 1], 0.99))  # the cb method's weights
    want = F.cross_entropy(out, y, weight=w)
    assert torch.allclose(reweighted_loss(ce, out, y, w), want, atol=1e-6)
    assert torch.allclose(cross_entropy_loss(out, y, 0.0, w), want, atol=1e-6)
    # sum_c w_c n_c L_c / sum_c w_c n_c by hand, for a loss that is not CE (CB's own weights inside)
    inner = cb_weights([8, 4, 2, 1], 0.5)
    rows = out.tolist()
    num = den = 0.0
    for c in (0, 1, 3):
        members = [i for i in range(9) if int(y[i]) == c]
        l_c = sum(float(inner[c]) * ce_by_hand(rows[i], c) for i in members) / len(members)
        num += float(w[c]) * len(members) * l_c
        den += float(w[c]) * len(members)
    got = reweighted_loss(lambda o, t: cb_loss(o, t, inner), out, y, w)
    assert float(got) == pytest.approx(num / den, rel=1e-6)
    # both options: the CE shortcut equals the generic composition (each sample's smoothed CE, class-weighted)
    ctx = ctx_for(label_smoothing=0.2)
    generic = stage_loss(PlainCE(), ctx, w)(out, y)
    assert torch.allclose(stage_loss(Method(), ctx, w)(out, y), generic, atol=1e-6)


def test_options_off_leave_the_methods_loss_as_it_is():
    ctx = ctx_for()
    m = PlainCE()
    tricks = StageOptions.start(m, ctx, torch.nn.Linear(2, 4)).epoch(0, per_epoch_generator(0, 0), 5)
    assert tricks.mixer is None and tricks.maxnorm is None and tricks.data_options == {}
    assert tricks.sampler == "instance"
    out, y = torch.randn(4, 4), torch.tensor([0, 1, 2, 3])
    assert torch.equal(tricks.loss(out, y), F.cross_entropy(out, y))


def test_reweight_and_resample_switch_at_their_epoch():
    assert switch_epoch(0.8, 200) == 160 and switch_epoch(0.5, 4) == 2 and switch_epoch(0.0, 10) == 0
    ctx = ctx_for(epochs=10, reweight="cb", reweight_beta=0.9, reweight_from=0.3, sampler="class_balanced",
                  resample_from=0.6)
    rec = stage_record(torch.nn.Linear(2, 2), ctx)
    assert rec["reweight"]["from_epoch"] == 4 and rec["resample"]["from_epoch"] == 7
    assert rec["reweight"]["weights"] == pytest.approx(cb_weights([8, 4, 2, 1], 0.9).tolist())
    st = StageOptions.start(PlainCE(), ctx, torch.nn.Linear(2, 4))
    out, y = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 2, 3])
    for epoch in range(10):
        t = st.epoch(epoch, per_epoch_generator(0, epoch), 3)
        assert t.sampler == ("class_balanced" if epoch >= 6 else "instance"), epoch
        want = F.cross_entropy(out, y, weight=cb_weights([8, 4, 2, 1], 0.9)) if epoch >= 3 else F.cross_entropy(out, y)
        assert torch.allclose(t.loss(out, y), want, atol=1e-6), epoch


def test_drs_switches_the_sampler_of_a_run_at_the_right_epoch(tmp_path, monkeypatch):
    seen = []
    original = Splits.train_batches

    def spy(self, batch_size, sampler, *args, **kw):
        seen.append(sampler)
        return original(self, batch_size, sampler, *args, **kw)

    monkeypatch.setattr(Splits, "train_batches", spy)
    spec = resolve("ce", "digits_lt", epochs=4, sets=["train.sampler=class_balanced", "train.resample_from=0.5"])
    r = execute(spec, Store(tmp_path), OPTS)
    assert seen == ["instance", "instance", "class_balanced", "class_balanced"]
    assert r["method_record"]["train_tricks"]["resample"] == {"before": "instance", "sampler": "class_balanced",
                                                              "from_epoch": 3}


# ----------------------------------------------------------------------------- AutoAugment

def small_splits(n=24, size=32, channels=3, augment=Augment(2, True)):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 3
    s = ImageSet(x, y)
    return Splits(s, s, s, 3, (0.5,) * channels, (0.25,) * channels, augment)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_autoaugment_in_memory_is_per_image_and_a_function_of_seed_and_epoch(policy):
    splits = small_splits()
    torch.manual_seed(5)
    state = torch.get_rng_state()

    def epoch(e, **kw):
        return [x for x, _ in splits.train_batches(8, "instance", per_epoch_generator(0, e), CPU, True, **kw)]

    plain, a, b = epoch(1), epoch(1, autoaugment=policy), epoch(1, autoaugment=policy)
    assert torch.equal(torch.get_rng_state(), state)  # torch's generator untouched
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(torch.cat(a), torch.cat(plain))
    assert not torch.equal(torch.cat(epoch(2, autoaugment=policy)), torch.cat(a))
    # per image: copies of one image in a batch are augmented differently (one seed per image; no crop, no flip)
    same = small_splits(n=16, augment=Augment(0, False))
    same.train = ImageSet(same.train.x[:1].repeat(16, 1, 1, 1), same.train.y[:16])
    (x, _), = list(same.train_batches(16, "instance", per_epoch_generator(0, 0), CPU, True, autoaugment=policy))
    assert len({tuple(v.flatten().tolist()) for v in x}) > 4
    (x, _), = list(same.train_batches(16, "instance", per_epoch_generator(0, 0), CPU, True))
    assert len({tuple(v.flatten().tolist()) for v in x}) == 1  # the positive control
    # the crop/flip draws and the order are those of the run without it (its seeds are drawn after them)
    ys = [y for _, y in splits.train_batches(8, "instance", per_epoch_generator(0, 1), CPU, True, autoaugment=policy)]
    assert torch.equal(torch.cat(ys), torch.cat([y for _, y in splits.train_batches(
        8, "instance", per_epoch_generator(0, 1), CPU, True)]))


def test_autoaugment_policy_follows_the_image_size():
    from torchvision.transforms import v2

    assert augmentation_policy("autoaugment", 32, 32).policy == v2.AutoAugmentPolicy.CIFAR10
    assert augmentation_policy("autoaugment", 224, 224).policy == v2.AutoAugmentPolicy.IMAGENET
    assert augmentation_policy("autoaugment", 8, 8).policy == v2.AutoAugmentPolicy.IMAGENET
    assert isinstance(augmentation_policy("randaugment", 32, 32), v2.RandAugment)


def test_autoaugment_on_image_files_is_a_function_of_the_image_seed(tmp_path, monkeypatch):
    img = torch.randint(0, 256, (3, 20, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    plain = ImageTransform(crop=16, resize=20, color_jitter=0.0)
    auto = ImageTransform(crop=16, resize=20, color_jitter=0.0, autoaugment="autoaugment")
    assert torch.equal(auto.train(img, 7), auto.train(img, 7))
    assert sum(not torch.equal(auto.train(img, s), plain.train(img, s)) for s in range(20)) >= 10
    # through the image-file splits: the workers' path and the device-decode path give the same batches
    from jpeg_trees import write_tree

    from ltbench.registry import benchmarks

    tree = write_tree(tmp_path, "imagenet_lt", [6, 3, 2])
    bench = benchmarks.get("imagenet_lt")()
    splits = bench.load({**bench.params, "crop": 16, "resize": 20}, tree.root, split_root=tree.split_root)
    monkeypatch.setenv("LTBENCH_WORKERS", "0")
    got = {}
    for decode in ("workers", "device"):
        monkeypatch.setenv("LTBENCH_DECODE", decode)
        got[decode] = [x for x, _ in splits.train_batches(4, "instance", per_epoch_generator(0, 0), CPU,
                                                          autoaugment="randaugment")]
    assert all(torch.equal(a, b) for a, b in zip(got["workers"], got["device"], strict=True))
    plain_batches = [x for x, _ in splits.train_batches(4, "instance", per_epoch_generator(0, 0), CPU)]
    assert not torch.equal(torch.cat(plain_batches), torch.cat(got["workers"]))


# ----------------------------------------------------------------------------- MaxNorm

@pytest.mark.parametrize("every", ["step", "epoch"])
def test_maxnorm_on_ce_keeps_every_row_within_the_radius(tmp_path, every):
    from ltbench.models.backbones import build_backbone

    spec = resolve("ce", "digits_lt", epochs=3, sets=["train.maxnorm=true", "train.threshold=0.2",
                                                      f"train.maxnorm_every={every}", "train.lr=0.2"])
    assert spec.origins["train.threshold"] == "--set" and spec.origins["train.maxnorm_every"] == "--set"
    r = execute(spec, Store(tmp_path), OPTS)
    rec = r["method_record"]["train_tricks"]["maxnorm"]
    torch.manual_seed(spec.seed)  # the initial classifier, as the engine builds it
    w0 = build_backbone(spec.backbone, 10, 1).classifier.weight
    norms0 = w0.detach().norm(dim=1).tolist()
    assert rec == {"radius": pytest.approx(min(norms0) + 0.2 * (max(norms0) - min(norms0)), rel=1e-6),
                   "threshold": 0.2, "every": every}
    assert max(r["classifier_norms"]) <= rec["radius"] * (1 + 1e-5)
    assert sum(n > rec["radius"] * 0.999 for n in r["classifier_norms"]) >= 3  # the constraint acted
    if every == "step":  # without it rows grow past the radius
        free = execute(resolve("ce", "digits_lt", epochs=3, sets=["train.lr=0.2"]), Store(tmp_path / "free"), OPTS)
        assert max(free["classifier_norms"]) > rec["radius"] * 1.05


def test_wb_numbers_are_those_of_before_maxnorm_moved_into_the_engine(tmp_path):
    """A 2 + 2 epoch wb run on digits-LT, per step and per epoch: the numbers computed with WB's own
    MaxNorm hooks (before this change), to float32's rounding (bit for bit on the CPU they came from)."""
    radius = 0.5600312948226929
    cases = {
        "step": ("7aef092d9032", [0.5519164800643921, 0.5518269538879395, 0.5525459051132202, 0.5525510311126709,
                                  0.5309287309646606, 0.5524020791053772, 0.5524383783340454, 0.552225649356842,
                                  0.5521194934844971, 0.5522652268409729]),
        "epoch": ("42f36b4abc77", [0.5600312352180481] + [radius] * 3 + [0.5309279561042786] + [radius] * 5),
    }
    store = Store(tmp_path)
    for every, (run_id, norms) in cases.items():
        spec = resolve("wb", "digits_lt", epochs=2, sets=["stage2.epochs=2"] + (
            ["stage2.maxnorm_every=epoch"] if every == "epoch" else []))
        assert spec.run_id == run_id
        r = execute(spec, store, OPTS)
        # bit for bit on the machine they were recorded on; another CPU's SIMD rounds float32 sums differently
        assert r["classifier_norms"] == pytest.approx(norms, rel=1e-6, abs=0), every
        assert r["test"]["per_class"] == [100.0, 98.0] + [0.0] * 8
        assert r["method_record"]["maxnorm_radius"] == radius
        assert r["method_record"]["stage2_tricks"]["maxnorm"] == {"radius": radius, "threshold": 0.1, "every": every}


# ----------------------------------------------------------------------------- specs

def test_run_ids_of_earlier_specs_are_unchanged():
    assert resolve("ce", "digits_lt").run_id == "1b3fa6222eb2"
    assert resolve("wb", "digits_lt").run_id == "102927cd5958"
    assert resolve("wb", "digits_lt", sets=["stage2.maxnorm=false"]).run_id == "785185846b58"
    assert resolve("wb", "digits_lt", sets=["stage2.maxnorm_every=epoch"]).run_id == "2b5b211488a1"
    assert resolve("wb", "digits_lt", sets=["stage2.threshold=0.2"]).run_id == "1bd7ff62ca38"
    # an option at its "off" value is the same run; switched on it is another
    off = ["train.mix=none", "train.label_smoothing=0", "train.maxnorm=false", "train.reweight=none",
           "train.autoaugment=none"]
    assert resolve("ce", "digits_lt", sets=off).run_id == "1b3fa6222eb2"
    ids = {resolve("ce", "digits_lt", sets=[s]).run_id for s in
           ("train.mix=mixup", "train.mix=cutmix", "train.label_smoothing=0.1", "train.maxnorm=true",
            "train.reweight=cb", "train.autoaugment=autoaugment")}
    assert len(ids) == 6 and "1b3fa6222eb2" not in ids
    spec = resolve("ce", "digits_lt", sets=["train.maxnorm=true"])
    assert spec.stages["train"]["threshold"] == 0.1 and spec.origins["train.threshold"] == "engine"
    assert "threshold" not in resolve("ce", "digits_lt").stages["train"]
    assert all(not check_hparam_names(methods.get(name)) for name in methods.names())


@pytest.mark.parametrize("sets, message", [
    (["train.mix_alpha=0.5"], r"train.mix=none ignores mix_alpha \(only mix=mixup or cutmix reads it\)"),
    (["train.threshold=0.2"], r"train.maxnorm=false ignores threshold \(only maxnorm=true reads it\)"),
    (["train.maxnorm_every=epoch"], "train.maxnorm=false ignores maxnorm_every"),
    (["train.reweight_from=0.8"], "train.reweight=none ignores reweight_from"),
    (["train.reweight_beta=0.9"], "train.reweight=none ignores reweight_beta"),
    (["train.resample_from=0.5"], "train.sampler=instance ignores resample_from"),
    (["train.label_smoothing=1"], r"train.label_smoothing=1.0: must lie in \[0, 1\)"),
    (["train.mix=cutmix", "train.mix_alpha=0"], "train.mix_alpha=0.0: must be positive"),
    (["train.mix=blend"], "train.mix='blend': must be one of none, mixup, cutmix"),
    (["train.autoaugment=randaugment", "train.augment=false"], "needs train.augment=true"),
    (["train.reweight=cb", "train.reweight_from=1.5"], r"train.reweight_from=1.5: must lie in \[0, 1\]"),
    (["train.maxnorm=true", "train.threshold=-1"], "train.threshold=-1.0: must not be negative"),
    (["train.maxnorm=true", "train.maxnorm_every=batch"], "train.maxnorm_every='batch': must be one of step, epoch"),
])
def test_bad_trick_settings_are_one_clear_message(sets, message):
    with pytest.raises(LtbenchError, match=message):
        resolve("ce", "digits_lt", sets=sets)


# ----------------------------------------------------------------------------- runs

def _kill_after_first_epoch(monkeypatch):
    original = engine.EpochLoop.run

    def run(self, epoch, bar):
        if epoch == 1:
            raise KeyboardInterrupt  # as a killed job: the checkpoint of epoch 1 stays
        return original(self, epoch, bar)

    monkeypatch.setattr(engine.EpochLoop, "run", run)


@pytest.mark.parametrize("sets", [["train.mix=mixup"], ["train.mix=cutmix", "train.autoaugment=randaugment",
                                                        "train.label_smoothing=0.1"]])
def test_a_run_resumed_from_its_epoch_1_checkpoint_equals_the_uninterrupted_one(tmp_path, monkeypatch, sets):
    spec = resolve("ce", "digits_lt", epochs=2, sets=sets)
    whole = execute(spec, Store(tmp_path / "whole"), OPTS)
    store = Store(tmp_path / "killed")
    with monkeypatch.context() as m:
        _kill_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            execute(spec, store, OPTS)
    assert [row["epoch"] for row in store.run_dir(spec).metrics()] == [1]
    torch.manual_seed(999)  # whatever torch's generator holds now, the resumed run draws the same
    resumed = execute(spec, store, OPTS)
    for key in ("val", "test", "classifier_norms", "selected"):
        assert resumed[key] == whole[key], key
    losses = [[row["loss"] for row in Store(p).run_dir(spec).metrics()] for p in (tmp_path / "whole", tmp_path / "killed")]
    assert losses[0] == losses[1]


TRICKS = {
    "mixup": (["train.mix=mixup"], "mix"),
    "cutmix": (["train.mix=cutmix", "train.mix_alpha=0.5"], "mix"),
    "autoaugment": (["train.autoaugment=autoaugment"], "autoaugment"),
    "randaugment": (["train.autoaugment=randaugment"], "autoaugment"),
    "label_smoothing": (["train.label_smoothing=0.1"], "label_smoothing"),
    "drw": (["train.reweight=cb", "train.reweight_from=0.5"], "reweight"),
    "drs": (["train.sampler=class_balanced", "train.resample_from=0.5"], "resample"),
    "maxnorm": (["train.maxnorm=true"], "maxnorm"),
}


@pytest.mark.parametrize("name", list(TRICKS))
def test_each_trick_trains_on_digits(tmp_path, name):
    sets, key = TRICKS[name]
    spec = resolve("ce", "digits_lt", epochs=6, sets=[*sets, "train.lr=0.1"])
    r = execute(spec, Store(tmp_path), OPTS)
    assert key in r["method_record"]["train_tricks"]
    if name == "autoaugment":  # digits are 8x8: torchvision's IMAGENET policy
        assert r["method_record"]["train_tricks"]["autoaugment"]["policy"] == "AutoAugment(IMAGENET policy), per image"
    rows = Store(tmp_path).run_dir(spec).metrics()
    assert rows[-1]["loss"] < 0.85 * rows[0]["loss"] and all(math.isfinite(row["loss"]) for row in rows)
    # chance is 10; 6 epochs of plain CE reach 52.5 / 50.8 (each option: 34 .. 63)
    assert r["val"]["class_mean"] > 30 and r["test"]["top1"] > 30


def test_generic_options_on_a_method_with_its_own_loss(tmp_path):
    """cb (its own loss) with label smoothing and DRW-style re-weighting: the generic path trains."""
    spec = resolve("cb", "digits_lt", epochs=6, sets=["train.label_smoothing=0.1", "train.reweight=cb",
                                                       "train.reweight_from=0.5", "train.lr=0.1"])
    r = execute(spec, Store(tmp_path), OPTS)
    assert r["method_record"]["train_tricks"]["reweight"]["from_epoch"] == 4
    assert r["method_record"]["train_tricks"]["label_smoothing"] == 0.1
    assert r["val"]["class_mean"] > 30 and r["test"]["top1"] > 30
