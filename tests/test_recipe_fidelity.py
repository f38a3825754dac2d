"""The recipes against the authors' code, constant by constant (issue 23): the WB code's CIFAR mean/std,
SADE's test-time weight decay and stopping rule, BCL's timm RandAugment (checked op by op against Pillow,
which their transform calls) and per-epoch schedule, MiSLAS's per-dataset CIFAR configs, and the sources of
the published numbers."""

import numpy as np
import pytest
import torch
from ltbench.datasets.cifar_lt import Cifar10LT, Cifar100LT
from ltbench.methods.bcl import BCL
from ltbench.methods.mislas import CIFAR_CONFIGS, MiSLAS
from ltbench.methods.sade import SADE, stops
from PIL import Image, ImageEnhance, ImageOps

from ltbench.data.autoaugment import RAND_FILL, RAND_OPS, rand_augment, rand_augment_draws, rand_augment_op
from ltbench.errors import LtbenchError
from ltbench.results.reference import published
from ltbench.spec.run_spec import resolve

# ----------------------------------------------------------------------------- CIFAR normalisation


def test_wb_code_normalization_is_the_constants_of_their_code():
    # ShadeAlsha/LTR-weight-balancing, utils/dataset_CIFAR100LT.py: Normalize((0.4914, 0.4822, 0.4465),
    # (0.2023, 0.1994, 0.2010)), for CIFAR-100-LT
    for bench in (Cifar100LT(), Cifar10LT()):
        params = {**bench.params, "normalization": "wb_code"}
        bench.check_params(params)  # an allowed value
        assert bench.normalization(params) == {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.2010)}


def test_cifar10_normalization_keeps_its_meaning():
    # run ids depend on it: cifar10 stays CIFAR-10's per-pixel std
    assert Cifar100LT().normalization({"normalization": "cifar10"})["std"] == (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------- SADE


@pytest.mark.parametrize("family, wd, lr", [("cifar", 5e-4, 0.1), ("imagenet_lt", 5e-4, 0.025),
                                             ("inat2018", 2e-4, 0.2), ("places_lt", 4e-4, 0.01)])
def test_sade_test_time_optimizer_is_their_config(family, wd, lr):
    # configs/test_time_*_sade.json: weight_decay 5e-4 (CIFAR-100, ImageNet-LT), 2e-4 (iNat), 4e-4 (Places)
    hp = SADE().hparams("train", "paper", family)
    assert (hp["tta_weight_decay"], hp["tta_lr"], hp["tta_batch"], hp["tta_epochs"]) == (wd, lr, 128, 5)
    assert hp["tta_stop_decimals"] == 2 and hp["tta_min_weight"] == 0.05


def test_sade_stops_on_weights_rounded_to_two_decimals():
    # their test_training returns np.round(softmax(w), 2) and breaks when one is < 0.05
    assert not stops(torch.tensor([0.0451, 0.5, 0.4549]), 0.05, 2)  # rounds to 0.05: goes on
    assert stops(torch.tensor([0.0451, 0.5, 0.4549]), 0.05, None)  # the comparison before rounding stopped
    assert stops(torch.tensor([0.045, 0.5, 0.455]), 0.05, 2)  # half to even: 0.04
    assert stops(torch.tensor([0.0449, 0.5, 0.4551]), 0.05, 2)
    assert not stops(torch.tensor([0.3, 0.3, 0.4]), 0.05, 2)


def test_sade_refuses_a_bad_decimals_value():
    # its declared setting (SADE.settings) refuses it before anything runs, as check() did
    with pytest.raises(LtbenchError, match=r"train.tta_stop_decimals=-1: must not be negative"):
        resolve("sade", "digits_lt", sets=["train.tta_stop_decimals=-1"])


# ----------------------------------------------------------------------------- BCL


def test_bcl_paper_recipe_takes_their_randaugment_and_epoch_schedule():
    for family in ("cifar", "imagenet_lt", "inat2018"):
        hp = BCL().hparams("train", "paper", family)
        assert (hp["randaug_n"], hp["randaug_m"], hp["randaug_mstd"]) == (2, 10.0, 0.5)  # rand-n2-m10-mstd0.5
        assert hp["lr_update"] == "epoch"  # their adjust_lr, once per epoch
        assert "autoaugment" not in hp  # not torchvision's RandAugment(2, 9) any more
    digits = BCL().hparams("train", "paper", "digits")  # unchanged: same keys as before, same run ids
    assert "randaug_n" not in digits and "lr_update" not in digits
    assert "randaug_n" not in BCL().hparams("train", "cao", "cifar")


def test_bcl_refuses_two_randaugments():
    hp = {**BCL().hparams("train", "paper", "cifar"), "autoaugment": "randaugment", "mix": "none",
          "label_smoothing": 0.0, "reweight": "none"}
    assert any("own RandAugment" in p for p in BCL().check("train", hp))


def _pil_reference(name, img, f, sign, resample):
    fill = RAND_FILL
    size = img.size
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "PosterizeTpu":
        return ImageOps.posterize(img, int(f * 4))
    if name == "Solarize":
        return ImageOps.solarize(img, int(f * 256))
    if name == "SolarizeAdd":
        add = int(f * 110)
        return img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
               "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
    if name in enhance:
        return enhance[name](img).enhance(f * 1.8 + 0.1)
    if name == "Rotate":
        return img.rotate(sign * f * 30, resample=resample, fillcolor=fill)
    matrix = {"ShearX": (1, sign * f * 0.3, 0, 0, 1, 0), "ShearY": (1, 0, 0, sign * f * 0.3, 1, 0),
              "TranslateXRel": (1, 0, sign * f * 0.45 * size[0], 0, 1, 0),
              "TranslateYRel": (1, 0, 0, 0, 1, sign * f * 0.45 * size[1])}[name]
    return img.transform(size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


@pytest.mark.parametrize("name", RAND_OPS)
@pytest.mark.parametrize("bicubic", [False, True])
def test_rand_augment_ops_match_pillow(name, bicubic):
    """Each op equals the Pillow call of their randaugment.py with timm's magnitude-to-argument map (the
    geometric ops: up to one level on a few pixels, float rounding at the sampling points)."""
    rng = np.random.RandomState(1)
    imgs = rng.randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    imgs[1] = imgs[1] // 3 + 40  # a narrow range (autocontrast stretches it)
    x = torch.from_numpy(imgs.copy()).permute(0, 3, 1, 2).contiguous()
    magnitude = torch.tensor([10.0, 8.7, 9.4, 6.0], dtype=torch.float64)
    negate = torch.tensor([False, True, False, True])
    out = rand_augment_op(name, x, magnitude, negate, torch.full((4,), bicubic))
    resample = Image.BICUBIC if bicubic else Image.BILINEAR
    for i in range(4):
        ref = _pil_reference(name, Image.fromarray(imgs[i]), float(magnitude[i]) / 10, -1 if negate[i] else 1,
                             resample)
        diff = (out[i].permute(1, 2, 0).int() - torch.from_numpy(np.asarray(ref).copy()).int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.005, (name, i)


def test_rand_augment_draws_are_their_distribution_and_repeatable():
    draws = rand_augment_draws(20000, torch.Generator().manual_seed(0), 2, 10.0, 0.5)
    assert draws["op"].shape == (20000, 2) and int(draws["op"].max()) == len(RAND_OPS) - 1
    assert abs(float(draws["apply"].float().mean()) - 0.5) < 0.02  # each op applies with p 0.5
    m = draws["magnitude"]
    assert float(m.max()) == 10.0 and abs(float((m == 10.0).float().mean()) - 0.5) < 0.02  # N(10, 0.5) clipped
    assert abs(float(m[m < 10].std()) - 0.5 * 0.6) < 0.05  # the lower half-normal's spread
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = rand_augment(x, rand_augment_draws(8, torch.Generator().manual_seed(3)))
    b = rand_augment(x, rand_augment_draws(8, torch.Generator().manual_seed(3)))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and not torch.equal(a, x)


# ----------------------------------------------------------------------------- MiSLAS


@pytest.mark.parametrize("benchmark, imbalance, values", [
    ("cifar100_lt", 100, (0.4, 0.1, 0.2, "train")), ("cifar100_lt", 50, (0.3, 0.0, 0.1, "train")),
    ("cifar100_lt", 10, (0.2, 0.0, 0.1, "train")), ("cifar10_lt", 100, (0.3, 0.0, 0.5, "eval")),
    ("cifar10_lt", 50, (0.2, 0.0, 0.2, "eval")), ("cifar10_lt", 10, (0.1, 0.0, 0.2, "eval"))])
def test_mislas_cifar_configs_are_theirs(benchmark, imbalance, values):
    # config/cifar{10,100}/*_stage2_mislas.yaml: smooth_head, smooth_tail, lr_factor, shift_bn
    got = MiSLAS().data_hparams("stage2", "paper", benchmark, {"imbalance": imbalance})
    assert (got["smooth_head"], got["smooth_tail"], got["lr_factor"], got["frozen_bn"]) == values


def test_mislas_defaults_are_the_cifar100_ir100_config():
    hp = MiSLAS().hparams("stage2", "paper", "cifar")
    row = CIFAR_CONFIGS[("cifar100_lt", 100.0)]
    assert {k: hp[k] for k in row} == row  # so data_hparams changes nothing there (run ids kept)
    assert MiSLAS().data_hparams("stage2", "paper", "imagenet_lt", {}) == {}


# ----------------------------------------------------------------------------- published numbers


def test_published_rows_cite_their_own_sources():
    crt = published("crt", "ImageNet-LT")
    assert (crt.many, crt.medium, crt.few, crt.all) == (61.8, 46.2, 27.4, 49.6)  # Kang et al.'s README
    assert "classifier-balancing README" in crt.source
    ride = {c: published("ride", c) for c in ("CIFAR-100-LT IR100", "ImageNet-LT", "iNaturalist 2018")}
    assert [r.all for r in ride.values()] == [48.6, 55.7, 71.2]  # RIDE's MODEL_ZOO.md, 3 experts, no distillation
    assert all("MODEL_ZOO" in r.source and "SADE" not in r.source for r in ride.values())
