"""Images at a backbone's resolution, prepared as LIFT prepares them (Shi et al., ICML 2024; shijxcs/LIFT
trainer.py), batched on the training device.

LIFT's transforms are torchvision's on PIL images: train RandomResizedCrop(R) (scale 0.08..1, aspect ratio
3/4..4/3, bilinear) and RandomHorizontalFlip; test Resize(R * 8 // 7) of the shorter side and CenterCrop(R);
then ToTensor and Normalize with the backbone's mean and std. CIFAR's 32x32 images go up to 224 this way.

``ResizedSplits`` does the same to the in-memory benchmarks (CIFAR-LT, digits-LT) a whole batch at a time on
the device: a crop box per image is drawn on the CPU (``draw_boxes``, torchvision's algorithm, vectorised),
then every crop is resampled with Pillow's bilinear filter written as two matrix products (``resample``:
Pillow's fixed-point weights, its horizontal pass, rounding to uint8, its vertical pass, rounding again; in
float64, which holds those integer sums exactly). So a batch equals, pixel for pixel, what the authors' PIL
pipeline makes of the same crops (tests/test_fm_data.py), with no per-image Python work. The image-file
benchmarks keep their decoder and torchvision's tensor transforms, at the same sizes and without colour
jitter (``ltbench.data.images.ImageTransform``).

``at_backbone_input`` chooses, for a run's model and data, the side (``data.resolution``, 0: a pretrained
backbone's input size, nothing for a from-scratch one) and the mean and std (``data.input_norm``, auto: a
pretrained backbone's own), and returns the splits to train on. The engine calls it as a run's model is built
(ltbench.engine.training: training, evaluation and the features of frozen stages all read these splits) and
`ltbench eval` with the source run's settings, so every view of an image is the one the run used. A
pretrained model still resizes inside (ltbench.models.pretrained.ImageTower) only where the side is not its
fixed input size: a data.resolution other than a ViT's own (the record's ``in_model`` says so).
``resize_crop`` (a resize of the whole image, then a crop at a given place) is the primitive for other views
of the evaluation images: ``with_tte_crops`` gives the splits whose evaluation batches are LIFT's test-time
crops of each whole image, (N, K, C, H, W), which ltbench.models.tte.CropEnsemble averages (the final report
and `ltbench eval` of a run with ``tte``, through ``Method.report_splits``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LtbenchError
from .images import ImageFileSplits, ImageTransform
from .splits import Splits, normalize

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2 (Resample.c)
SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults (LIFT passes none)
RATIO = (3 / 4, 4 / 3)
TEST_RESIZE = (8, 7)  # LIFT's test transform: Resize(resolution * 8 // 7), then CenterCrop(resolution)
CROPS = ("five", "ten")  # LIFT's test-time crops (tte_mode): FiveCrop, TenCrop


# ---------------------------------------------------------------------------------------------
# Pillow's bilinear resampling, batched


def _triangle(x: float) -> float:
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


@functools.lru_cache(maxsize=512)
def pil_weights(in_size: int, out_size: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Pillow's bilinear weights for resizing a line of ``in_size`` pixels to ``out_size`` (Resample.c's
    precompute_coeffs and normalize_coeffs_8bpc, in the same double-precision steps): per output pixel, its
    first input pixel and the fixed-point weights of the pixels from there."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    out = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_triangle((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:  # summed in order, as the C loop does (Python's sum() compensates from 3.12 on)
            ww += w
        k = [w / ww for w in k] if ww != 0.0 else k
        out.append((xmin, tuple(int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else
                                int(0.5 + w * (1 << PRECISION_BITS)) for w in k)))
    return tuple(out)


def weight_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``pil_weights`` as an (out_size, in_size) float64 matrix."""
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    for row, (xmin, ks) in enumerate(pil_weights(in_size, out_size)):
        m[row, xmin:xmin + len(ks)] = torch.tensor(ks, dtype=torch.float64)
    return m


@functools.lru_cache(maxsize=32)
def _crop_table(full: int, out: int, device: str) -> torch.Tensor:
    """(full + 1, out, full): entry s the weights of resizing s pixels to ``out``, in columns 0..s-1."""
    table = torch.zeros(full + 1, out, full, dtype=torch.float64)
    for s in range(1, full + 1):
        table[s, :, :s] = weight_matrix(s, out)
    return table.to(device)


def crop_weights(full: int, out: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """(N, out, full): per image, the weights of resizing its crop [start, start + length) of a line of
    ``full`` pixels to ``out`` (zero outside the crop); ``start``/``length`` int64 on the device."""
    table = _crop_table(full, out, str(start.device))
    j = torch.arange(full, device=start.device)[None, :] - start[:, None]  # place inside the crop
    inside = (j >= 0) & (j < length[:, None])
    base = table[length]  # (N, out, full)
    w = base.gather(2, j.clamp(0, full - 1)[:, None, :].expand(-1, out, -1))
    return w * inside[:, None, :]


def _round(t: torch.Tensor) -> torch.Tensor:
    """A pass's fixed-point sums to pixels as Pillow's clip8: (sum + 2^21) >> 22, clipped to 0..255."""
    return t.add_(1 << (PRECISION_BITS - 1)).div_(1 << PRECISION_BITS).floor_().clamp_(0, 255)


def resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) resampled as Pillow does: ``cols`` (N or 1, OW, W) weights along each
    row (the horizontal pass, rounded to 8 bits), then ``rows`` (N or 1, OH, H) down each column."""
    t = _round(torch.matmul(x.to(torch.float64), cols.transpose(-1, -2).unsqueeze(1)))
    return _round(torch.matmul(rows.unsqueeze(1), t)).to(torch.uint8)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """RandomResizedCrop's resample: each uint8 image's box (top, left, height, width: ``boxes`` (N, 4)
    int64 on its device) resized to ``size`` x ``size``, as torchvision's resized_crop of a PIL image."""
    h, w = x.shape[-2:]
    rows = crop_weights(h, size, boxes[:, 0], boxes[:, 2])
    cols = crop_weights(w, size, boxes[:, 1], boxes[:, 3])
    return resample(x, rows, cols)


def resized_shape(h: int, w: int, short: int) -> tuple[int, int]:
    """torchvision's Resize(short) of an h x w image: the shorter side to ``short``, the other in proportion."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


@functools.lru_cache(maxsize=32)
def _resize_crop_weights(h: int, w: int, short: int, size: int, top: int, left: int,
                         device: str) -> tuple[torch.Tensor, torch.Tensor]:
    rh, rw = resized_shape(h, w, short)
    rows = weight_matrix(h, rh)[top:top + size]
    cols = weight_matrix(w, rw)[left:left + size]
    if rows.shape[0] != size or cols.shape[0] != size:
        raise ValueError(f"a {size} px crop at ({top}, {left}) does not fit a {rh}x{rw} image")
    return rows[None].to(device), cols[None].to(device)


def resize_crop(x: torch.Tensor, short: int, size: int, top: int | None = None,
                left: int | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized as torchvision's Resize(short) of PIL images, then cut to
    ``size`` x ``size`` at (top, left) (default: the centre, as CenterCrop)."""
    h, w = x.shape[-2:]
    rh, rw = resized_shape(h, w, short)
    top = int(round((rh - size) / 2.0)) if top is None else top
    left = int(round((rw - size) / 2.0)) if left is None else left
    rows, cols = _resize_crop_weights(h, w, short, size, top, left, str(x.device))
    return resample(x, rows, cols)


def crop_origins(h: int, w: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's FiveCrop of ``size`` x ``size`` in an h x w image, in its order: the
    top-left, top-right, bottom-left and bottom-right corners, then the centre (CenterCrop's rounding)."""
    if size > h or size > w:
        raise ValueError(f"a {size} px crop does not fit a {h}x{w} image")
    centre = (int(round((h - size) / 2.0)), int(round((w - size) / 2.0)))
    return [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), centre]


def tte_crops(x: torch.Tensor, size: int, expand: int, mode: str = "five") -> torch.Tensor:
    """LIFT's test-time crops of uint8 images (N, C, H, W), (N, K, C, size, size): each whole image resized as
    torchvision's Resize(size + expand) of a PIL image, then FiveCrop(size) (K = 5) or TenCrop(size) (K = 10:
    those five, then the same five of the mirrored resized image, each a mirrored crop of it)."""
    if mode not in CROPS:
        raise ValueError(f"unknown crops {mode!r}; one of {', '.join(CROPS)}")
    short = size + expand
    rh, rw = resized_shape(*x.shape[-2:], short)
    origins = crop_origins(rh, rw, size)
    views = [resize_crop(x, short, size, top, left) for top, left in origins]
    if mode == "ten":  # the crop at (top, left) of the mirror image is the mirror of the crop at (top, rw - left - size)
        views += [resize_crop(x, short, size, top, rw - left - size).flip(-1) for top, left in origins]
    return torch.stack(views, 1)


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop's boxes, vectorised


def boxes_from_draws(h: int, w: int, tries: torch.Tensor, offsets: torch.Tensor,
                     scale: tuple[float, float] = SCALE, ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for N images of h x w from uniform draws: ``tries``
    (N, 10, 2) for the ten tries' area and log aspect ratio, ``offsets`` (N, 2) for the top and left of the
    box; the first try that fits, else the central fallback. (N, 4) int64 boxes: top, left, height, width."""
    area = h * w
    target = area * (scale[0] + tries[..., 0] * (scale[1] - scale[0]))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + tries[..., 1] * (hi - lo))
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
    found = fits.any(1)
    in_ratio = w / h  # the fallback: the whole image, cut to the ratio's bounds
    fw, fh = (w, int(round(w / min(ratio)))) if in_ratio < min(ratio) else \
        (int(round(h * max(ratio))), h) if in_ratio > max(ratio) else (w, h)
    ch = torch.where(found, ch.gather(1, first)[:, 0], float(fh))
    cw = torch.where(found, cw.gather(1, first)[:, 0], float(fw))
    top = torch.where(found, torch.floor(offsets[:, 0] * (h - ch + 1)), float((h - fh) // 2))
    left = torch.where(found, torch.floor(offsets[:, 1] * (w - cw + 1)), float((w - fw) // 2))
    return torch.stack([top, left, ch, cw], 1).long()


def draw_boxes(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes (scale 0.08..1, ratio 3/4..4/3) for ``n`` images of h x w, from ``gen`` (CPU)."""
    tries = torch.rand(n, 10, 2, generator=gen, dtype=torch.float64)
    offsets = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return boxes_from_draws(h, w, tries, offsets)


# ---------------------------------------------------------------------------------------------
# the splits at a backbone's resolution


@dataclass
class ResizedSplits(Splits):
    """In-memory splits at ``size`` px: training batches through RandomResizedCrop and a flip (where the
    benchmark flips), every other view through Resize(``resize``) and CenterCrop; grey images repeated to
    three channels when the mean has three (a colour backbone's)."""

    size: int = 224
    resize: int = 256

    def draw_augment(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        h, w = self.train.x.shape[-2:]
        box = draw_boxes(n, h, w, gen)
        flips = [torch.rand(n, generator=gen) < 0.5] if self.augment.flip else []
        return [box, *flips]

    def apply_augment(self, x: torch.Tensor, *draws: torch.Tensor) -> torch.Tensor:
        box, *flips = draws
        x = resized_crops(x, box, self.size)
        return torch.where(flips[0].view(-1, 1, 1, 1), x.flip(3), x) if flips else x

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        return resize_crop(x, self.resize, self.size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and len(self.mean) == 3:
            x = x.expand(-1, 3, -1, -1)
        return normalize(x, self.mean, self.std)


@dataclass
class CropSplits(Splits):
    """In-memory splits for evaluation only (the final report, `ltbench eval` of a run with test-time ensembling):
    every unaugmented batch is ``tte_crops`` of its whole images, (N, K, C, ``size``, ``size``), normalised as
    the splits they were made from normalise theirs, ``crop_batch`` images a batch; ``flip``: each crop
    mirrored."""

    size: int = 224
    expand: int = 24
    mode: str = "five"
    grey_to_rgb: bool = False  # grey images repeated to three channels (ResizedSplits' rule)

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        return tte_crops(x, self.size, self.expand, self.mode)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey_to_rgb and x.shape[-3] == 1:
            x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
        return normalize(x, self.mean, self.std)

    def eval_batches(self, split: str, batch_size: int, device: torch.device,
                     flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in super().eval_batches(split, crop_batch(batch_size, self.mode), device):
            yield (x.flip(-1) if flip else x), y

    def train_batches(self, *args: Any, **kwargs: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise TypeError("CropSplits are evaluation views (test-time crops); train on the splits they were made from")


@dataclass(frozen=True)
class CropTransform(ImageTransform):
    """An image-file benchmark's evaluation transform with test-time crops: Resize(crop + ``expand``) of the
    whole image, then FiveCrop(crop) or TenCrop(crop), torchvision's tensor transforms (antialiased, as its
    Resize + CenterCrop); each image gives (K, 3, crop, crop)."""

    expand: int = 24
    mode: str = "five"

    def eval(self, img: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF

        big = TF.resize(img, [self.crop + self.expand], antialias=True)
        cut = TF.five_crop if self.mode == "five" else TF.ten_crop
        return torch.stack(list(cut(big, [self.crop, self.crop])))

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "test": tte_view(self.crop, self.expand, self.mode)}


@dataclass
class CropFileSplits(ImageFileSplits):
    """Image-file splits for evaluation only, through a ``CropTransform``: batches (N, K, 3, H, W) of
    ``crop_batch`` images; ``flip``: each crop mirrored."""

    def eval_batches(self, split: str, batch_size: int, device: torch.device,
                     flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert isinstance(self.transform, CropTransform)
        for x, y in super().eval_batches(split, crop_batch(batch_size, self.transform.mode), device):
            yield (x.flip(-1) if flip else x), y

    def train_batches(self, *args: Any, **kwargs: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise TypeError("CropFileSplits are evaluation views (test-time crops); train on the splits they were made "
                        "from")


def crop_batch(batch_size: int, mode: str) -> int:
    """Images per batch of test-time crops: a batch holds about as many crops as a batch of single views holds
    images (the model runs on each crop position of the batch in turn, ``batch_size`` // K images at a time)."""
    return max(1, batch_size // (5 if mode == "five" else 10))


def tte_view(size: int, expand: int, mode: str) -> str:
    """The words for LIFT's test-time crops of ``size`` px with ``expand``."""
    return f"Resize({size + expand}) + {'Five' if mode == 'five' else 'Ten'}Crop({size}) of each whole image"


def with_tte_crops(splits: Any, expand: int, mode: str) -> Any:
    """``splits`` whose evaluation batches are LIFT's test-time crops of each whole image, (N, K, C, H, W), at the
    side the run's model reads (a ResizedSplits' size, an image-file benchmark's crop, else the images' own
    side): ``CropSplits``, or ``CropFileSplits`` through a ``CropTransform``. For evaluation only; ``info["tte"]``
    says which view."""
    if mode not in CROPS:
        raise LtbenchError(f"tte_crops={mode!r}: expected one of {', '.join(CROPS)}.")
    if isinstance(splits, ImageFileSplits):
        transform = CropTransform(**{f.name: getattr(splits.transform, f.name)
                                     for f in dataclasses.fields(ImageTransform)}, expand=expand, mode=mode)
        fields = {f.name: getattr(splits, f.name) for f in dataclasses.fields(ImageFileSplits)}
        info = {**splits.info, "tte": f"{tte_view(transform.crop, expand, mode)}, torchvision's antialiased "
                "resize; the mean of the crops' logits"}
        return CropFileSplits(**{**fields, "transform": transform, "info": info})
    if not isinstance(splits, Splits):
        raise LtbenchError(f"test-time crops (tte) need the benchmark's images; these splits "
                           f"({type(splits).__name__}) have none: set tte=false.")
    h, w = splits.test.x.shape[-2:]
    if not isinstance(splits, ResizedSplits) and h != w:
        raise LtbenchError(f"test-time crops (tte) need square images or data at a backbone's resolution; these "
                           f"are {h}x{w}: set data.resolution=N, or tte=false.")
    size = splits.size if isinstance(splits, ResizedSplits) else h
    fields = {f.name: getattr(splits, f.name) for f in dataclasses.fields(Splits)}
    fields["info"] = {**splits.info, "tte": f"{tte_view(size, expand, mode)}, Pillow's bilinear; the mean of the "
                      "crops' logits"}
    return CropSplits(**fields, size=size, expand=expand, mode=mode,
                      grey_to_rgb=isinstance(splits, ResizedSplits) and len(splits.mean) == 3)


@dataclass(frozen=True)
class BackboneInput:
    """What a run's images become: ``size`` px through LIFT's transforms (0: the benchmark's own
    pipeline), normalised with ``mean``/``std`` (None: the benchmark's), ``norm`` saying whose."""

    size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    norm: str  # "backbone" | "benchmark"

    @property
    def resize(self) -> int:
        return self.size * TEST_RESIZE[0] // TEST_RESIZE[1]


def backbone_input(model: Any, data: Any) -> BackboneInput:
    """The input a run's ``model`` gets from its ``data`` settings: data.resolution (0: a pretrained
    backbone's input size, 0 for a from-scratch one) and data.input_norm (auto: a pretrained backbone's
    mean/std, else the benchmark's)."""
    from ..spec.schema import settings_of

    data = settings_of(data)
    pre = getattr(model, "preprocess", None) or {}  # a pretrained model's (ltbench.models.pretrained)
    size = int(data.resolution) or (int(pre["size"][0]) if pre.get("size") else 0)
    norm = data.input_norm if data.input_norm != "auto" else ("backbone" if pre else "benchmark")
    if norm == "backbone":
        if not (pre.get("mean") and pre.get("std")):
            raise LtbenchError("data.input_norm=backbone: this backbone records no mean/std of its own (only "
                               "pretrained ones do); use data.input_norm=benchmark.")
        return BackboneInput(size, tuple(pre["mean"]), tuple(pre["std"]), "backbone")
    return BackboneInput(size, None, None, "benchmark")


def at_backbone_input(splits: Any, model: Any, data: Any) -> tuple[Any, dict[str, Any] | None]:
    """The splits a run trains and evaluates on (``splits`` as the benchmark loaded them, brought to the
    model's input: ``backbone_input``), and what result.json's ``data_info.input`` says of it (None:
    unchanged; an image-file benchmark's ``data_info.transform`` is updated too): the side, the train and test transforms, the normalisation and whose it is, where the model
    still resizes (``in_model``: a side other than a fixed-size backbone's own, e.g. a ViT's), and
    ``summary``, the line method_record.backbone.input keeps."""
    inp = backbone_input(model, data)
    if inp.size == 0 and inp.norm == "benchmark":
        return splits, None
    mean, std = inp.mean or tuple(splits.mean), inp.std or tuple(splits.std)
    info: dict[str, Any] = {"size": inp.size}
    if isinstance(splits, ImageFileSplits):
        transform = splits.transform if inp.size == 0 else \
            dataclasses.replace(splits.transform, crop=inp.size, resize=inp.resize, color_jitter=0.0)
        info.update(transform.describe())
    elif type(splits) is Splits:
        transform = None
        if inp.size:
            flip = " + RandomHorizontalFlip" if splits.augment.flip else ""
            info.update(train=f"RandomResizedCrop({inp.size}, scale={SCALE}, ratio=(3/4, 4/3)){flip}, Pillow's "
                        "bilinear, batched on the device",
                        test=f"Resize({inp.resize}) + CenterCrop({inp.size}), Pillow's bilinear")
    else:
        raise LtbenchError(f"the splits of this benchmark ({type(splits).__name__}) cannot be brought to the "
                           f"backbone's input ({inp.size} px, the {inp.norm}'s normalisation); set data.resolution"
                           f" and data.input_norm to leave them as they are, or a from-scratch backbone.")
    info["normalize"] = f"mean {_fmt(mean)}, std {_fmt(std)} (the {inp.norm}'s)"
    fixed = getattr(getattr(model, "features", None), "size", None)  # a pretrained tower's input (ImageTower)
    side = inp.size or (int(splits.transform.crop) if transform is not None else int(splits.train.x.shape[-1]))
    if fixed and (side, side) != tuple(fixed):
        info["in_model"] = f"resized (bilinear) from {side} to {fixed[0]}x{fixed[1]}, the backbone's input, inside " \
            "the model"
    info["summary"] = (f"{side} px through {'LIFT' if inp.size else 'the benchmark'}'s transforms, the {inp.norm}'s "
                       "mean/std" + (f"; {info['in_model']}" if "in_model" in info else ""))
    if transform is not None:
        described = {**transform.describe(), "normalize": info["normalize"]}  # the benchmark's record, updated
        out = dataclasses.replace(splits, transform=transform, mean=mean, std=std,
                                  info={**splits.info, "transform": described, "input": info})
        return out, info
    fields = {f.name: getattr(splits, f.name) for f in dataclasses.fields(Splits)}
    fields.update(mean=mean, std=std, info={**splits.info, "input": info})
    out = ResizedSplits(**fields, size=inp.size, resize=inp.resize) if inp.size else Splits(**fields)
    return out, info


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
