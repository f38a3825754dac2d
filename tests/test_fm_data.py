"""Data at a pretrained backbone's resolution (ltbench.data.resolution, ltbench.spec.inputs): batches equal,
pixel for pixel, what torchvision's PIL pipeline (LIFT's) makes of the same images and crop boxes; runs on
CIFAR-format files and image folders use the backbone's size and mean/std and say so; `ltbench eval` sees
what the run saw; data settings that would do nothing are refused in one line; imagefolder defaults to a
pretrained CLIP ViT-B/16 with a linear probe and says so; a frozen pretrained backbone's features are
extracted once, kept on disk and shared. CPU only, clip_vit_tiny (random init), data written by the tests."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")

import torch  # noqa: E402
from cifar_files import write_cifar  # noqa: E402
from jpeg_trees import write_image_folder  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ltbench.api import run  # noqa: E402
from ltbench.cli.app import app  # noqa: E402
from ltbench.data.resolution import (  # noqa: E402
    CropFileSplits,
    CropSplits,
    ResizedSplits,
    at_backbone_input,
    resize_crop,
    tte_crops,
    with_tte_crops,
)
from ltbench.data.splits import Augment, ImageSet, Splits, per_epoch_generator, sample_indices  # noqa: E402
from ltbench.errors import LtbenchError  # noqa: E402
from ltbench.models import pretrained  # noqa: E402
from ltbench.registry import backbones, benchmarks  # noqa: E402
from ltbench.spec.inputs import default_note  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD: clip_vit_tiny's own
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own, offline: nothing of the machine's is read or downloaded."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LTBENCH_WORKERS", "0")
    return cache


def images(n: int, h: int = 32, w: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus noise: the resampling's rounding matters on every pixel."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, w)[None, None, None, :] + torch.linspace(0, 50, h)[None, None, :, None]
    return (ramp + torch.randint(0, 56, (n, channels, h, w), generator=g)).clamp(0, 255).to(torch.uint8)


def pil(x: torch.Tensor) -> Image.Image:
    a = x.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def back(img: Image.Image) -> torch.Tensor:
    a = np.array(img)  # a writable copy
    return torch.from_numpy(a[:, :, None] if a.ndim == 2 else a).permute(2, 0, 1)


def resized_splits(x: torch.Tensor, size: int, flip: bool = True) -> ResizedSplits:
    n = len(x)
    y = torch.arange(n) % 5
    sets = [ImageSet(x, y, s) for s in ("train", "val", "test")]
    mean = (0.5,) * x.shape[1]
    return ResizedSplits(*sets, num_classes=5, mean=mean, std=mean, augment=Augment(4, flip), size=size,
                         resize=size * 8 // 7)


def test_training_batches_equal_torchvision_random_resized_crop_of_pil_images_with_the_same_boxes(monkeypatch):
    x = images(37)
    splits = resized_splits(x, 40)
    drawn: list[list[torch.Tensor]] = []
    own = splits.draw_augment
    monkeypatch.setattr(splits, "draw_augment", lambda n, gen: drawn.append(own(n, gen)) or drawn[-1])
    monkeypatch.setattr(splits, "normalize", lambda b: b)  # the uint8 pixels, before ToTensor + Normalize
    batches = list(splits.train_batches(16, "instance", per_epoch_generator(3, 0), torch.device("cpu")))
    order = sample_indices(splits.train.y, "instance", per_epoch_generator(3, 0))  # the epoch's first draw
    crop = transforms.RandomResizedCrop(40)  # LIFT's: scale 0.08..1, ratio 3/4..4/3, bilinear, on PIL images
    start, flipped = 0, 0
    for (batch, _), (boxes, flips) in zip(batches, drawn, strict=True):
        assert batch.dtype == torch.uint8 and batch.shape[1:] == (3, 40, 40)
        for k, i in enumerate(order[start:start + len(batch)].tolist()):
            box = tuple(boxes[k].tolist())
            monkeypatch.setattr(transforms.RandomResizedCrop, "get_params", staticmethod(lambda *a, b=box: b))
            want = crop(pil(x[i]))
            if flips[k]:
                want = transforms.functional.hflip(want)
            assert torch.equal(batch[k], back(want)), (i, box)
            flipped += int(flips[k])
        start += len(batch)
    assert start == 37 and 0 < flipped < start  # batches of 16, 16 and 5: every image, some mirrored


def test_the_vectorised_boxes_follow_torchvisions_get_params_one_image_at_a_time():
    """RandomResizedCrop.get_params, written out for one image (ten tries of an area in 8..100% and a log-uniform
    ratio in 3/4..4/3, the first that fits placed uniformly, else the whole image): the batched draws give the
    same boxes from the same uniform numbers."""
    import math

    from ltbench.data.resolution import boxes_from_draws

    g = torch.Generator().manual_seed(0)
    tries = torch.rand(400, 10, 2, generator=g, dtype=torch.float64)
    offsets = torch.rand(400, 2, generator=g, dtype=torch.float64)
    tries[:5, :, 0] = 1.0  # the whole area at a ratio that is not 1 fits no square image: the fallback
    tries[:5, :, 1] = 0.0
    h_, w_ = 24, 32
    boxes = boxes_from_draws(h_, w_, tries, offsets)
    for i in range(400):
        want = (0, 0, h_, w_)  # the fallback: 32/24 lies inside 3/4..4/3, so the whole image
        for area_u, ratio_u in tries[i].tolist():
            area = h_ * w_ * (0.08 + area_u * 0.92)
            aspect = math.exp(math.log(3 / 4) + ratio_u * (math.log(4 / 3) - math.log(3 / 4)))
            w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < w <= w_ and 0 < h <= h_:
                top, left = offsets[i].tolist()
                want = (int(top * (h_ - h + 1)), int(left * (w_ - w + 1)), h, w)
                break
        assert tuple(boxes[i].tolist()) == want, i
    assert (boxes[:5] == torch.tensor([0, 0, h_, w_])).all()


@pytest.mark.parametrize("size, shape, channels", [(40, (32, 32), 3), (224, (32, 32), 3), (16, (32, 32), 3),
                                                    (24, (20, 28), 3), (32, (8, 8), 1)])
def test_the_evaluation_view_is_resize_8_7_and_center_crop_of_pil_images(size, shape, channels):
    x = images(6, *shape, channels=channels, seed=size)
    view = transforms.Compose([transforms.Resize(size * 8 // 7), transforms.CenterCrop(size)])
    got = resize_crop(x, size * 8 // 7, size)
    for k in range(len(x)):
        assert torch.equal(got[k], back(view(pil(x[k])))), k
    if shape[0] == shape[1]:  # the splits' every unaugmented view: evaluation, features, augment=false
        splits = resized_splits(x, size)
        splits.normalize = lambda b: b  # type: ignore[method-assign]
        (batch, _), = splits.eval_batches("test", 8, torch.device("cpu"))
        assert torch.equal(batch, got)


def test_a_plain_splits_at_a_pretrained_backbone_input_is_resized_and_normalised_with_its_mean_and_std():
    model = backbones.get("clip_vit_tiny")(5, 3)
    x = images(4)
    plain = Splits(*(ImageSet(x, torch.arange(4), s) for s in ("train", "val", "test")), num_classes=5,
                   mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), augment=Augment())
    out, info = at_backbone_input(plain, model, {"resolution": 0, "input_norm": "auto"})
    assert isinstance(out, ResizedSplits) and (out.size, out.resize) == (32, 36)
    assert out.mean == CLIP_MEAN and out.std == CLIP_STD and "in_model" not in info
    (b, _), = out.eval_batches("test", 8, torch.device("cpu"))
    want = (resize_crop(x, 36, 32).float() / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) / \
        torch.tensor(CLIP_STD)[:, None, None]
    assert torch.allclose(b, want, atol=1e-6)
    same, none = at_backbone_input(plain, model, {"resolution": 0, "input_norm": "benchmark"})
    assert same.mean == (0.5, 0.5, 0.5) and "the benchmark's" in none["normalize"]
    scratch = backbones.get("small_cnn")(num_classes=5, in_channels=3)
    kept, nothing = at_backbone_input(plain, scratch, {"resolution": 0, "input_norm": "auto"})
    assert kept is plain and nothing is None  # a from-scratch backbone at the defaults: as it was


@pytest.mark.parametrize("size, expand, shape, channels", [(32, 24, (8, 8), 1), (40, 24, (32, 32), 3),
                                                            (224, 24, (32, 32), 3), (24, 21, (20, 28), 3),
                                                            (16, 0, (32, 32), 3), (32, 5, (33, 33), 3)])
@pytest.mark.parametrize("mode", ["five", "ten"])
def test_the_test_time_crops_are_torchvisions_resize_and_five_or_ten_crop_of_pil_images(size, expand, shape,
                                                                                          channels, mode):
    """LIFT's test loader: Resize(size + expand) of each whole PIL image, then FiveCrop(size) or TenCrop(size)."""
    x = images(5, *shape, channels=channels, seed=size + expand)
    view = transforms.Compose([transforms.Resize(size + expand),
                               transforms.FiveCrop(size) if mode == "five" else transforms.TenCrop(size)])
    got = tte_crops(x, size, expand, mode)
    assert got.shape == (5, 5 if mode == "five" else 10, channels, size, size)
    for k in range(len(x)):
        assert torch.equal(got[k], torch.stack([back(c) for c in view(pil(x[k]))])), k
    if shape[0] == shape[1]:  # the splits' evaluation batches, and their mirrored ones (each crop mirrored)
        splits = with_tte_crops(resized_splits(x, size), expand, mode)
        assert isinstance(splits, CropSplits)
        splits.normalize = lambda b: b  # type: ignore[method-assign]
        (batch, _), = splits.eval_batches("test", 100, torch.device("cpu"))
        (mirrored, _), = splits.eval_batches("test", 100, torch.device("cpu"), flip=True)
        assert torch.equal(batch, got) and torch.equal(mirrored, got.flip(-1))
        sizes = [len(b) for b, _ in splits.eval_batches("test", 10, torch.device("cpu"))]  # 10 views a batch
        assert sizes == ([2, 2, 1] if mode == "five" else [1] * 5)
        with pytest.raises(TypeError, match="evaluation views"):
            next(splits.train_batches(4, "instance", torch.Generator(), torch.device("cpu")))


def test_the_test_time_crops_of_grey_images_at_a_backbones_input_are_normalised_as_its_other_views():
    x = images(4, 8, 8, channels=1)
    plain = Splits(*(ImageSet(x, torch.arange(4), s) for s in ("train", "val", "test")), num_classes=5,
                   mean=(0.5,), std=(0.2,), augment=Augment())
    out, _ = at_backbone_input(plain, backbones.get("clip_vit_tiny")(5, 3), {"resolution": 0, "input_norm": "auto"})
    (b, _), = with_tte_crops(out, 24, "five").eval_batches("test", 100, torch.device("cpu"))
    crops = tte_crops(x, 32, 24, "five").expand(-1, -1, 3, -1, -1)  # grey repeated to the backbone's three
    want = (crops.float() / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert b.shape == (4, 5, 3, 32, 32) and torch.allclose(b, want, atol=1e-6)
    (own, _), = with_tte_crops(plain, 24, "ten").eval_batches("test", 100, torch.device("cpu"))  # the images' own side
    assert own.shape == (4, 10, 1, 8, 8)


@pytest.mark.parametrize("mode", ["five", "ten"])
def test_an_image_folders_test_time_crops_are_torchvisions_resize_and_crops_of_each_decoded_image(tmp_path, mode):
    """The image-file benchmarks keep their decoder and torchvision's v2 tensor transforms: Resize(crop + expand) of
    each whole decoded image, then FiveCrop(crop) or TenCrop(crop)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    write_image_folder(tmp_path / "folder", [4, 3, 2], sizes=(20, 36))
    bench = benchmarks.get("imagefolder")()
    params = {**bench.params, **bench.data_params(tmp_path / "folder", None), "test_per_class": 1, "val_per_class": 1}
    loaded = bench.load(params, tmp_path / "folder", False, None)
    splits, _ = at_backbone_input(loaded, backbones.get("clip_vit_tiny")(3, 3), {"resolution": 0, "input_norm": "auto"})
    crops = with_tte_crops(splits, 24, mode)
    assert isinstance(crops, CropFileSplits) and crops.transform.describe()["test"] == \
        f"Resize(56) + {'Five' if mode == 'five' else 'Ten'}Crop(32) of each whole image"
    crops.normalize = lambda b: b  # type: ignore[method-assign]
    (batch, y), = crops.eval_batches("test", 100, torch.device("cpu"))
    (mirrored, _), = crops.eval_batches("test", 100, torch.device("cpu"), flip=True)
    view = v2.Compose([v2.Resize(56), v2.FiveCrop(32) if mode == "five" else v2.TenCrop(32)])
    files = crops.test
    assert batch.shape == (3, 5 if mode == "five" else 10, 3, 32, 32) and torch.equal(y, files.y)
    for k, path in enumerate(files.paths):
        img = decode_image(str(files.root / path), mode=ImageReadMode.RGB)
        assert torch.equal(batch[k], torch.stack(view(img))), path
    assert torch.equal(mirrored, batch.flip(-1))


# ------------------------------------------------------------------------------ runs


def small_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's python files, written by cifar_files with 12 training images per class and the first 300 test
    images; CIFAR-10-LT told to expect 12 a class (the CPU runs its ViT on a few hundred images, not 60,000)."""
    folder = write_cifar(root, "cifar10", images_per_class_train=12)
    with open(folder / "test_batch", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({**test, "labels": test["labels"][:300], "data": test["data"][:300],
                     "filenames": test["filenames"][:300]}, f, protocol=4)
    monkeypatch.setattr(benchmarks.get("cifar10_lt"), "n_max", 12)


def test_a_cifar_run_at_resolution_40_uses_the_backbones_normalisation_and_eval_sees_the_same(tmp_path, monkeypatch):
    small_cifar10(tmp_path / "data", monkeypatch)
    common = dict(method="ce", dataset="cifar10_lt", backbone="clip_vit_tiny", epochs=1, results=tmp_path / "r",
                  data_root=tmp_path / "data", progress=False, device="cpu", download=False)
    [result] = run(**common, imbalance=10, set=["data.resolution=40", "data.val_per_class=2", "train.tuning=bias"])
    inp = result["data_info"]["input"]
    assert inp["size"] == 40 and inp["test"] == "Resize(45) + CenterCrop(40), Pillow's bilinear"
    assert inp["normalize"] == ("mean (0.4815, 0.4578, 0.4082), std (0.2686, 0.2613, 0.2758) (the backbone's)")
    # clip_vit_tiny is a ViT of 32 px: the fallback, said in the record
    assert inp["in_model"] == "resized (bilinear) from 40 to 32x32, the backbone's input, inside the model"
    assert result["method_record"]["backbone"]["input"].startswith("40 px through LIFT's transforms, the backbone's")
    assert result["spec"]["data"]["resolution"] == 40 and "input_norm" not in result["spec"]["data"]
    out = CliRunner().invoke(app, ["eval", result["run_id"], "--dataset", "cifar10_lt", "--data-root",
                                   str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "r" / "evals").glob("*/*/result.json")]
    assert record["data_info"]["input"] == inp
    assert abs(record["scores"]["top1"] - result["test"]["top1"]) < 1e-9  # the same model, the same view


def test_an_image_folder_on_a_pretrained_backbone_gets_a_linear_probe_at_its_size_and_says_so(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "folder", [8, 6, 4], sizes=(20, 36))
    monkeypatch.setattr(benchmarks.get("imagefolder"), "default_backbone", "clip_vit_tiny")  # weights here: none
    out = CliRunner().invoke(app, ["run", "-m", "ce", "-d", "imagefolder", "--epochs", "2", "--data-root",
                                   str(tmp_path / "folder"), "--results", str(tmp_path / "r"), "--device", "cpu",
                                   "--set", "data.test_per_class=2", "--set", "data.val_per_class=1"])
    assert out.exit_code == 0, out.output
    assert ("imagefolder: clip_vit_tiny pretrained (its default backbone), a linear probe on its features, extracted "
            "once; --backbone resnet50 trains from scratch") in " ".join(out.output.split())  # at the run's start
    result = json.loads(next((tmp_path / "r").glob("runs/*/*/*/result.json")).read_text())
    spec = json.loads(next((tmp_path / "r").glob("runs/*/*/*/spec.json")).read_text())
    assert spec["stages"]["train"]["tuning"] == "linear" and spec["stages"]["train"]["augment"] is False
    assert spec["origins"]["train.tuning"] == "benchmark imagefolder (pretrained backbone)"
    transform = result["data_info"]["transform"]
    assert transform["train"] == "RandomResizedCrop(32, scale=(0.08, 1.0)) + RandomHorizontalFlip"  # no jitter
    assert transform["test"] == "Resize(36) + CenterCrop(32)" and "(the backbone's)" in transform["normalize"]
    assert result["data_info"]["input"]["size"] == 32 and "in_model" not in result["data_info"]["input"]
    assert result["method_record"]["train_path"] == "cached_features"


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("dataset, backbone, sets, message", [
    ("imagefolder", "clip_vit_tiny", ["data.crop=64"],
     r"^imagefolder on clip_vit_tiny: data.crop=64 \(--set\) does nothing: at clip_vit_tiny's resolution the images "
     r"go through LIFT's transforms; drop it, or set data.resolution=N for another size\.$"),
    ("imagefolder", "resnet50", ["data.resolution=64", "data.color_jitter=0.2"],
     r"data.color_jitter=0.2 \(--set\) does nothing: at data.resolution=64 the images go through LIFT's transforms"),
    ("cifar10_lt", "clip_vit_tiny", ["data.normalization=cifar10"],
     r"data.normalization='cifar10' \(--set\) does nothing: clip_vit_tiny's images are normalised with its own "
     r"mean/std \(data.input_norm\); drop it, or set data.input_norm=benchmark to use it\.$"),
    ("cifar10_lt", "resnet32", ["data.input_norm=backbone"],
     r"data.input_norm=backbone: resnet32 is not a pretrained backbone and has no mean/std of its own; use auto or "
     r"benchmark\.$"),
    ("digits_lt", "clip_vit_tiny", ["data.resolution=-8"], r"data.resolution=-8: must not be negative\.$"),
    ("digits_lt", "clip_vit_tiny", ["data.input_norm=imagenet"],
     r"data.input_norm='imagenet': must be one of auto, backbone, benchmark\.$"),
    ("digits_lt", "clip_vit_tiny", ["data.resolution=big"], r"data.resolution='big': expected an integer"),
])
def test_data_settings_that_do_nothing_or_cannot_be_are_refused_in_one_line(dataset, backbone, sets, message):
    with pytest.raises(LtbenchError, match=message) as exc:
        resolve("ce", dataset, backbone=backbone, sets=sets)
    assert "\n" not in str(exc.value)


def test_the_input_settings_pass_where_they_do_something_and_keep_from_scratch_run_ids():
    assert resolve("ce", "cifar10_lt", backbone="clip_vit_tiny",
                   sets=["data.normalization=cifar10", "data.input_norm=benchmark"]).data["normalization"] == "cifar10"
    plain = resolve("ce", "cifar10_lt")
    assert plain.data["resolution"] == 0 and plain.origins["data.resolution"] == "engine"
    assert "resolution" not in plain.canonical()["data"] and "input_norm" not in plain.canonical()["data"]
    assert resolve("ce", "cifar10_lt", sets=["data.resolution=0"]).run_id == plain.run_id
    assert resolve("ce", "cifar10_lt", sets=["data.resolution=64"]).run_id != plain.run_id
    assert plain.stages["train"]["augment"] is True and default_note(plain) is None


# ------------------------------------------------------------------------------ imagefolder's default


def _cached_clip_b16(cache: Path) -> None:
    """clip_vit_b16's weights file as huggingface_hub caches it (its content is never read by a dry run)."""
    root = cache / "models--timm--vit_base_patch16_clip_224.openai"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    path = root / "snapshots" / ("0" * 40) / "open_clip_model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{}")


NOTE = ("imagefolder: clip_vit_b16 pretrained (its default backbone), a linear probe on its features, extracted "
        "once; --backbone resnet50 trains from scratch")


def test_imagefolder_defaults_to_a_linear_probe_on_clip_vit_b16_and_says_so(tmp_path, offline_hub):
    spec = resolve("ce", "imagefolder")
    assert spec.backbone == "clip_vit_b16" and spec.origins["backbone"] == "benchmark"
    assert spec.stages["train"]["tuning"] == "linear" and spec.stages["train"]["augment"] is False
    assert spec.origins["train.augment"] == "backbone clip_vit_b16 frozen (features extracted once)"
    assert default_note(spec) == NOTE
    lift = resolve("lift", "imagefolder")  # LIFT's own tuning and backbone (its recipe's) stay
    assert lift.stages["train"]["tuning"] == "adaptformer" and lift.origins["train.tuning"] == "method lift"
    scratch = resolve("ce", "imagefolder", backbone="resnet50")
    assert scratch.stages["train"]["tuning"] == "full" and scratch.stages["train"]["augment"] is True
    assert scratch.run_id == "d74bcfefd1e1"  # the id this spec had as imagefolder's default, before this one
    assert default_note(scratch) is None and scratch.origins["train.tuning"] == "engine"
    assert resolve("ce", "imagefolder", sets=["train.tuning=full"]).stages["train"]["tuning"] == "full"
    wb = resolve("wb", "imagefolder")
    assert wb.parent["stages"]["train"]["tuning"] == "linear" and default_note(wb.parent_spec()) == NOTE
    mixup = resolve("mislas", "imagefolder").parent_spec().stages["train"]  # mixed images: the backbone each epoch
    assert mixup["tuning"] == "linear" and mixup["cache_features"] is False and mixup["mix"] == "mixup"
    assert resolve("ride", "imagefolder").backbone == "resnet50_3experts"  # experts: the from-scratch backbone's

    write_image_folder(tmp_path / "folder", [6, 4])
    args = ["run", "-m", "ce", "-d", "imagefolder", "--data-root", str(tmp_path / "folder"),
            "--results", str(tmp_path / "r")]
    out = CliRunner().invoke(app, args)  # offline without the weights: the one line, nothing written
    message = out.output.strip()
    assert out.exit_code != 0 and message.count("\n") == 0 and message.startswith("error: backbone clip_vit_b16:")
    assert "--set backbone.weights=FILE" in message and not (tmp_path / "r").exists()
    _cached_clip_b16(offline_hub)
    out = CliRunner().invoke(app, [*args, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert f"    default   {NOTE}" in out.output and "tuning=linear" in out.output


# ------------------------------------------------------------------------------ the features cache


def test_a_frozen_pretrained_backbone_runs_once_per_image_and_its_features_are_shared(tmp_path, monkeypatch):
    seen: list[int] = []
    forward = pretrained.ImageTower.forward
    monkeypatch.setattr(pretrained.ImageTower, "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    common = dict(dataset="digits_lt", backbone="clip_vit_tiny", results=tmp_path, progress=False, device="cpu")
    [ce] = run(method="ce", epochs=3, set=["train.tuning=linear"], **common)
    record = ce["method_record"]
    assert record["train_path"] == "cached_features" and record["final_eval"] == "cached_features"
    assert record["train_features"] == "extracted"
    images_once = ce["data_info"]["train_size"] + 200 + 500  # train, val, test of digits-LT, each once
    assert sum(seen) == images_once  # not once per epoch
    kept = Path(record["train_features_file"])
    assert kept.parent == tmp_path / "features" / "clip_vit_tiny" and kept.is_file()
    seen.clear()
    [la] = run(method="logit_adj", epochs=2, set=["train.tuning=linear"], **common)  # another method, same seed
    assert la["method_record"]["train_features"].startswith("reused") and sum(seen) == 0
    assert la["method_record"]["train_features_file"] == str(kept)
    seen.clear()
    [wb] = run(method="wb", epochs=2, set=["stage1.tuning=linear", "stage2.epochs=2"], **common)
    parent = json.loads(next(tmp_path.glob(f"runs/*/ce/{wb['method_record']['parent']}/result.json")).read_text())
    assert parent["method_record"]["train_features"].startswith("reused")  # the ce run of 3 epochs: another id
    assert wb["method_record"]["stage2_features"].startswith("reused") and sum(seen) == 0
