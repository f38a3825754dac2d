"""`--recipe kang`: cRT, LWS and tau-norm as Kang et al.'s configs (facebookresearch/classifier-balancing,
config/*/cls_crt.yaml and cls_lws.yaml), and their class-aware sampler beside the i.i.d. ones."""

from typing import Any

import pytest
import torch

from ltbench.data.splits import per_epoch_generator, sample_indices
from ltbench.engine.training import RunOptions, effective_lr, execute
from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.spec.recipes import KANG_STAGE2
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import BY_KEY

OPTS = RunOptions(device="cpu", live_progress=False)

# benchmark -> (epochs of crt, epochs of lws, batch, weight decay, the lr of their config at that batch)
KANG = {"imagenet_lt": (10, 5, 512, 5e-4, 0.2), "inat2018": (30, 5, 512, 1e-4, 0.2),
        "places_lt": (10, 5, 256, 5e-4, 0.1)}


@pytest.mark.parametrize("benchmark", sorted(KANG))
@pytest.mark.parametrize("method", ["crt", "lws"])
def test_crt_and_lws_follow_kangs_configs(method: str, benchmark: str) -> None:
    crt_epochs, lws_epochs, batch, wd, config_lr = KANG[benchmark]
    spec = resolve(method, benchmark, recipe="kang")
    hp = spec.stages["stage2"]
    mine = f"method {method}"
    expected: dict[str, tuple[Any, str]] = {
        "epochs": (crt_epochs if method == "crt" else lws_epochs, mine), "batch_size": (batch, mine),
        "lr": (0.2, mine), "lr_scaling": ("linear", mine), "base_batch": (512, mine),
        "weight_decay": (wd, mine), "schedule": ("cosine", mine), "warmup_epochs": (0, mine),
        "lr_update": ("epoch", mine), "sampler": ("class_aware", mine), "augment": (True, mine),
        "frozen_bn": ("train", mine), "momentum": (0.9, "engine"), "select": ("val", "engine"),
    }
    for key, (value, origin) in expected.items():
        assert (hp[key], spec.origins[f"stage2.{key}"]) == (value, origin), key
    assert effective_lr(hp) == pytest.approx(config_lr)
    smaller = resolve(method, benchmark, recipe="kang", sets=["stage2.batch_size=128"])
    assert effective_lr(smaller.stages["stage2"]) == pytest.approx(0.05)  # 0.2 x 128 / 512
    # stage 1 is the kang recipe's, with the weight decay of the decoupled methods' stage 1
    parent = spec.parent_spec()
    assert parent is not None and parent.recipe == "kang" and spec.recipe == "kang"
    for key in ("epochs", "batch_size", "lr", "schedule"):
        assert parent.origins[f"train.{key}"] == "recipe kang", key
    assert spec.backbone == parent.backbone == {"imagenet_lt": "resnext50_32x4d", "inat2018": "resnet50",
                                                "places_lt": "resnet152"}[benchmark]


def test_kang_stage2_table_covers_the_kang_recipe() -> None:
    from ltbench.spec.recipes import RECIPES

    assert set(KANG_STAGE2) == set(RECIPES["kang"])
    assert all(set(per_method) == {"crt", "lws"} for per_method in KANG_STAGE2.values())


@pytest.mark.parametrize("benchmark", sorted(KANG))
def test_tau_norm_under_kang_sweeps_tau_on_validation_and_drops_the_bias(benchmark: str) -> None:
    spec = resolve("tau_norm", benchmark, recipe="kang")
    hp = spec.stages["posthoc"]
    assert (hp["tau_min"], hp["tau_max"], hp["tau_step"], hp["select"], hp["keep_bias"]) == (0.0, 2.0, 0.1, "val", False)
    assert spec.origins["posthoc.tau_max"] == "method tau_norm"
    assert spec.parent is not None and spec.parent["recipe"] == "kang"


def test_other_recipes_and_methods_are_unchanged() -> None:
    paper = resolve("crt", "imagenet_lt").stages["stage2"]
    assert (paper["sampler"], paper["weight_decay"], paper["lr"], paper["epochs"], paper["augment"]) == \
        ("class_balanced", 5e-4, 0.01, 10, False)
    assert resolve("crt", "digits_lt").run_id == "6c2c09c408c6"  # as before the kang stage 2
    assert resolve("lws", "imagenet_lt").run_id == "b74bf28eea33"
    assert resolve("wb", "imagenet_lt", recipe="kang").run_id == "e896096f5ecf"  # kang's stage 2 is cRT/LWS only
    with pytest.raises(LtbenchError, match="recipe 'kang' has no settings for benchmark 'cifar100_lt'"):
        resolve("crt", "cifar100_lt", recipe="kang")


# a small imbalanced label vector: class 0 has 12 images, 1 has 6, 2 has 3, 3 and 4 one each
LABELS = torch.tensor([0, 1, 0, 2, 0, 1, 0, 3, 0, 2, 0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1, 0, 4])


def test_existing_samplers_draw_as_before() -> None:
    # the first indices of seed 7, epoch 3, as drawn before the class-aware sampler existed
    gen = per_epoch_generator(7, 3)
    assert sample_indices(LABELS, "instance", gen).tolist() == [
        17, 10, 22, 9, 7, 23, 3, 11, 1, 21, 16, 6, 20, 19, 13, 15, 8, 2, 12, 14, 0, 5, 18, 4]
    gen = per_epoch_generator(7, 3)
    assert sample_indices(LABELS, "class_balanced", gen).tolist() == [
        7, 12, 21, 14, 7, 7, 12, 23, 17, 3, 2, 23, 17, 23, 8, 1, 23, 7, 23, 15, 18, 7, 7, 9]
    assert "class_aware" in BY_KEY["sampler"].choices


def test_class_aware_sampler_cycles_through_the_classes() -> None:
    labels = torch.cat([LABELS, LABELS + 5, torch.tensor([9] * 28)])  # 76 draws: a pass of 10 classes + 9 visits
    n, k, per = len(labels), 10, 4
    idx = sample_indices(labels, "class_aware", per_epoch_generator(3, 0))
    drawn = labels[idx]
    assert len(idx) == n and ((0 <= idx) & (idx < n)).all()
    blocks = drawn.view(-1, per)
    assert (blocks == blocks[:, :1]).all()  # 4 images of one class at each visit
    for start in range(0, n - n % (k * per), k * per):  # every full pass: each class 4 times
        assert torch.bincount(drawn[start:start + k * per], minlength=k).tolist() == [per] * k
    counts = torch.bincount(drawn, minlength=k)
    assert counts.max() - counts.min() <= per
    for c in range(k):  # each class's images in shuffled cycles: every full cycle is a permutation
        mine = torch.nonzero(labels == c).flatten()
        seq = idx[drawn == c]
        for start in range(0, len(seq) - len(seq) % len(mine), len(mine)):
            assert sorted(seq[start:start + len(mine)].tolist()) == mine.tolist()
        per_image = torch.bincount(seq, minlength=n)[mine]
        assert per_image.max() - per_image.min() <= 1


def test_class_aware_sampler_is_a_function_of_seed_and_epoch() -> None:
    first = sample_indices(LABELS, "class_aware", per_epoch_generator(7, 3))
    assert torch.equal(first, sample_indices(LABELS, "class_aware", per_epoch_generator(7, 3)))
    assert not torch.equal(first, sample_indices(LABELS, "class_aware", per_epoch_generator(7, 4)))
    assert not torch.equal(first, sample_indices(LABELS, "class_aware", per_epoch_generator(8, 3)))
    assert first.tolist() == [23, 23, 23, 23, 7, 7, 7, 7, 3, 16, 9, 3, 15, 0, 2, 8, 1, 11, 21, 5, 7, 7, 7, 7]
    # an absent class is never visited, and an epoch that ends inside a visit is cut there
    gapped = torch.tensor([0, 0, 0, 2, 2, 0, 2])
    drawn = gapped[sample_indices(gapped, "class_aware", per_epoch_generator(0, 0))]
    assert len(drawn) == 7 and 1 not in drawn.tolist()
    assert sorted(torch.bincount(drawn, minlength=3).tolist()) == [0, 3, 4]


def test_crt_trains_with_the_class_aware_sampler(tmp_path) -> None:
    store = Store(tmp_path)  # one stage-1 run; stage 2 on augmented images and on cached features
    for augment, path in (("true", "frozen_backbone_per_epoch"), ("false", "cached_features")):
        spec = resolve("crt", "digits_lt", epochs=4, sets=["stage2.sampler=class_aware", f"stage2.augment={augment}",
                                                           "stage2.epochs=3", "stage2.lr=0.1"])
        result = execute(spec, store, OPTS)
        losses = [m["loss"] for m in store.run_dir(spec).metrics() if m["stage"] == "stage2"]
        assert len(losses) == 3 and losses[-1] < losses[0], augment
        assert result["val"]["class_mean"] > 25, augment  # a re-initialised classifier of 10 classes learned
        assert result["method_record"]["stage2_path"].startswith(path)
