"""Benchmark data as the engine sees it.

Small-image benchmarks (CIFAR-LT, digits-LT) live in memory as uint8 tensors; batches are cut,
cropped, flipped and normalised on the training device with no per-image Python work.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .autoaugment import auto_augment


@dataclass(frozen=True)
class ShotRule:
    """Many / medium / few groups on training counts: many n > many_above, few n < few_below."""

    many_above: int = 100
    few_below: int = 20
    name: str = "strict"

    def groups(self, counts: list[int]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
        for c, n in enumerate(counts):
            key = "many" if n > self.many_above else "few" if n < self.few_below else "medium"
            out[key].append(c)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "many": f"n > {self.many_above}",
                "medium": f"{self.few_below} <= n <= {self.many_above}", "few": f"n < {self.few_below}"}


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation of small images: random crop with zero padding, horizontal flip."""

    crop_padding: int = 4
    flip: bool = True


def per_epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG for one epoch's order and augmentation: a pure function of (seed, epoch), so a run
    resumed from a checkpoint draws exactly what the uninterrupted run drew."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % 2**64)  # any seed < 2^63


def sample_indices(labels: torch.Tensor, sampler: str, gen: torch.Generator) -> torch.Tensor:
    """One epoch of indices (as many as there are samples), on the CPU: a permutation for
    instance-balanced sampling; class-balanced sampling draws a class uniformly, then an image of that
    class; class-aware sampling (``class_aware_indices``) cycles through the classes. The draws come
    from ``gen`` (a CPU generator) and so does all the index arithmetic: labels on another device are
    copied to the CPU first (pass CPU labels to avoid that copy)."""
    n = labels.numel()
    if sampler == "instance":
        return torch.randperm(n, generator=gen)
    if sampler == "class_balanced":
        labels = labels.cpu()  # the CPU draws below meet these counts (a no-op for CPU labels)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        present = torch.nonzero(counts).flatten()
        starts = torch.cumsum(counts, 0) - counts
        cls = present[torch.randint(len(present), (n,), generator=gen)]
        offset = (torch.rand(n, generator=gen) * counts[cls]).long()
        return order[starts[cls] + offset]
    if sampler == "class_aware":
        return class_aware_indices(labels, gen)
    raise ValueError(f"unknown sampler {sampler!r}")


CLASS_AWARE_PER_CLASS = 4  # images taken from a class at each visit (Kang et al.'s num_samples_cls)


def class_aware_indices(labels: torch.Tensor, gen: torch.Generator,
                        per_class: int = CLASS_AWARE_PER_CLASS) -> torch.Tensor:
    """One epoch (as many indices as there are samples) of class-aware sampling, as Kang et al.'s
    ClassAwareSampler: the classes present are visited in a shuffled order, reshuffled after each pass
    over all of them, and each visit takes the next ``per_class`` images of that class's own cycle, a
    shuffled order of its images reshuffled when exhausted. So every pass draws ``per_class`` images
    of each class (the epoch's last pass may be partial): per-class counts differ by at most
    ``per_class``, and within a class the images' counts by at most one. Draws: the passes' class
    orders, then one key per image and cycle; all from ``gen`` (CPU)."""
    labels = labels.cpu()
    n = labels.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()
    k = len(present)
    passes = -(-n // (per_class * k))
    visits = present[torch.rand(passes, k, generator=gen, dtype=torch.float64).argsort(dim=1).flatten()]
    cls = visits.repeat_interleave(per_class)[:n]  # the class of every draw
    i = torch.arange(n)
    rank = (i // (per_class * k)) * per_class + i % per_class  # the draw's place in its class's cycle
    # each class's cycle: as many shuffled copies of its images as its draws need
    cycles = -(-torch.bincount(cls, minlength=len(counts)) // counts.clamp_min(1))
    sizes = cycles * counts
    pool_cls = torch.repeat_interleave(torch.arange(len(counts)), sizes)
    pool_starts = torch.cumsum(sizes, 0) - sizes
    within = torch.arange(len(pool_cls)) - pool_starts[pool_cls]  # place in the class's cycle, unshuffled
    copy = (torch.cumsum(cycles, 0) - cycles)[pool_cls] + within // counts[pool_cls]  # (class, copy) group
    order = torch.argsort(labels, stable=True)
    image = order[(torch.cumsum(counts, 0) - counts)[pool_cls] + within % counts[pool_cls]]
    shuffle = torch.rand(len(pool_cls), generator=gen, dtype=torch.float64).argsort()
    shuffle = shuffle[torch.argsort(copy[shuffle], stable=True)]  # a random order inside every group
    return image[shuffle][pool_starts[cls] + rank]


@dataclass
class ImageSet:
    """A split held in memory: uint8 images (N, C, H, W) and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor
    name: str = ""
    _device_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return int(self.y.numel())

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (self.x.to(device), self.y.to(device))
        return self._device_cache[key]

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.y, minlength=num_classes).tolist()


class LabelledSet(Protocol):
    """One split as the engine reads it: its int64 labels and its size (``ImageSet``, ``TensorSet``,
    ``ltbench.data.images.ImageFiles``)."""

    @property
    def y(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...


class TrainSplits(Protocol):
    """What the engine, evaluation and methods read of a benchmark's splits: ``Splits`` (small images
    in memory), ``FeatureSplits`` (frozen features) and ``ltbench.data.images.ImageFileSplits`` (image files)
    all offer it."""

    @property
    def train(self) -> LabelledSet: ...

    @property
    def val(self) -> LabelledSet: ...

    @property
    def test(self) -> LabelledSet: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def class_counts(self) -> list[int]:
        """Training images per class."""
        ...

    @property
    def shot_rule(self) -> ShotRule: ...

    @property
    def augment(self) -> Augment:
        """The benchmark's augmentation; ``augment.flip``: the final report adds flip-averaged accuracy."""
        ...

    def train_batches(self, batch_size: int, sampler: str, gen: torch.Generator, device: torch.device,
                      augment: bool = ...) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (inputs, labels) batches on ``device``, in ``sampler``'s order; every random draw
        from ``gen``. Splits of images also take ``autoaugment="autoaugment"|"randaugment"`` (a keyword
        the engine passes only when a stage switches it on): that policy per image after the others."""
        ...

    def eval_batches(self, split: str, batch_size: int, device: torch.device,
                     flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``split`` ("train", "val" or "test") in order, unaugmented; with ``flip``
        its horizontally mirrored images."""
        ...


@dataclass
class Splits:
    """Everything a run needs to know about one benchmark instance, held in memory (``TrainSplits``)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment
    shot_rule: ShotRule = ShotRule()
    info: dict[str, Any] = field(default_factory=dict)  # facts recorded in result.json

    @property
    def class_counts(self) -> list[int]:
        return self.train.class_counts(self.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    # The views of a batch (ltbench.data.resolution.ResizedSplits gives LIFT's at a backbone's resolution):
    # the random draws of ``n`` training images' augmentation (on the CPU), that augmentation, and the view
    # of every image that is not augmented (evaluation, features, augment=false).
    def draw_augment(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        return draw_crop_flip(n, self.augment, gen)

    def apply_augment(self, x: torch.Tensor, *draws: torch.Tensor) -> torch.Tensor:
        return crop_flip(x, self.augment.crop_padding, *draws)

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def train_batches(
        self, batch_size: int, sampler: str, gen: torch.Generator, device: torch.device, augment: bool = True,
        autoaugment: str = "none",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches, cut, augmented and normalised on ``device``. Every random draw of the
        epoch is made on the CPU first (order, then per batch: crop rows, crop columns, flips) and
        moved to the device before the first batch, so the batches need no host-device transfer or sync.
        ``autoaugment`` (with ``augment``): torchvision's AutoAugment or RandAugment on each uint8 image
        after its crop and flip (ltbench.engine.stage_options.auto_augment), its choices from one seed per image drawn
        from ``gen`` after the other draws."""
        x_all, y_all = self.train.on(device)
        idx = sample_indices(self.train.y, sampler, gen)
        sizes = [min(batch_size, len(idx) - a) for a in range(0, len(idx), batch_size)]
        sizes = [n for n in sizes if n >= 2]  # a batch of one breaks batch norm; it is a rounding remainder
        draws = [self.draw_augment(n, gen) for n in sizes] if augment else []
        policy = autoaugment if augment and autoaugment != "none" else None
        seeds = torch.randint(0, 2**62, (len(idx),), generator=gen).tolist() if policy else []
        idx = idx.to(device)  # the epoch's copies to the device, before the first batch
        cuts = [torch.cat(d).to(device) for d in zip(*draws, strict=True)]
        start = 0
        for n in sizes:
            b = idx[start:start + n]
            x = x_all[b]
            x = self.apply_augment(x, *(c[start:start + n] for c in cuts)) if augment else self.eval_view(x)
            if policy:
                x = auto_augment(x, seeds[start:start + n], policy)
            start += n
            yield self.normalize(x), y_all[b]

    def eval_batches(
        self, split: str, batch_size: int, device: torch.device, flip: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data: ImageSet = getattr(self, split)
        x_all, y_all = data.on(device)
        for start in range(0, len(data), batch_size):
            x = self.eval_view(x_all[start:start + batch_size])
            if flip:
                x = x.flip(3)
            yield self.normalize(x), y_all[start:start + batch_size]


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested in dicts, lists and tuples) moved to ``device``; any
    other value is kept as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images -> float, scaled to [0, 1] and standardised per channel (ToTensor + Normalize),
    in place on one new tensor."""
    m, s = _channel_stats(tuple(mean), tuple(std), x.device)
    return x.float().div_(255).sub_(m).div_(s)


@functools.lru_cache(maxsize=32)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, C, 1, 1) tensors on ``device``, made once (not one copy per batch)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def draw_crop_flip(n: int, aug: Augment, gen: torch.Generator) -> list[torch.Tensor]:
    """The random draws of ``crop_flip`` for ``n`` images, on the CPU: crop row and column offsets
    (when there is padding), then flips (when the benchmark flips)."""
    p, out = aug.crop_padding, []
    if p > 0:
        out += [torch.randint(0, 2 * p + 1, (n,), generator=gen), torch.randint(0, 2 * p + 1, (n,), generator=gen)]
    if aug.flip:
        out.append(torch.rand(n, generator=gen) < 0.5)
    return out


def crop_flip(x: torch.Tensor, p: int, *draws: torch.Tensor) -> torch.Tensor:
    """Crop each uint8 image at its offsets in its zero-padded (``p``) copy, then mirror the images
    whose flip is set; ``draws`` as ``draw_crop_flip`` makes them, on the device of ``x``."""
    n, _, h, w = x.shape
    if p > 0:
        oy, ox, *draws = draws
        padded = F.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
        bidx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if draws:
        x = torch.where(draws[0].view(n, 1, 1, 1), x.flip(3), x)
    return x.contiguous()


def random_crop_flip(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Batched random crop (zero padding ``aug.crop_padding``) and horizontal flip of uint8 images,
    done on whatever device ``x`` lives on; the random draws come from ``gen`` (CPU)."""
    return crop_flip(x, aug.crop_padding, *(d.to(x.device) for d in draw_crop_flip(len(x), aug, gen)))


@dataclass
class TensorSet:
    """A split as tensors of any shape (e.g. cached features) with int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())


@dataclass
class FeatureSplits:
    """The splits of a benchmark seen through a frozen feature extractor: features are computed once
    (no augmentation) and classifier-only stages train on them (``TrainSplits``).
    Each view holds the images of the same split of ``base`` in its order (so its labels are those of
    ``base``, on any device)."""

    train: TensorSet
    val: TensorSet
    test: TensorSet
    base: TrainSplits  # the splits the features are of (in memory or image files)
    test_flip: TensorSet | None = None  # features of the mirrored test images (flip-averaged accuracy)

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def shot_rule(self) -> ShotRule:
        return self.base.shot_rule

    @property
    def class_counts(self) -> list[int]:
        return self.base.class_counts

    @property
    def augment(self) -> Augment:
        return self.base.augment

    def train_batches(self, batch_size: int, sampler: str, gen: torch.Generator, device: torch.device,
                      augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The epoch's order is drawn from the base splits' labels, which are on the CPU; the cached labels
        # are the same labels in the same order, possibly on the device (no copy back per epoch).
        idx = sample_indices(self.base.train.y, sampler, gen).to(device)  # one copy per epoch
        x_all, y_all = self.train.x.to(device), self.train.y.to(device)
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            if len(b) < 2:
                break
            yield x_all[b], y_all[b]

    def eval_batches(self, split: str, batch_size: int, device: torch.device,
                     flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data: TensorSet | None = getattr(self, f"{split}_flip" if flip else split, None)
        if data is None:
            raise ValueError(f"these cached features have no mirrored view of {split}")
        for start in range(0, len(data), batch_size):
            yield data.x[start:start + batch_size].to(device), data.y[start:start + batch_size].to(device)

