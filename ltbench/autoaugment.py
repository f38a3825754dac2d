"""AutoAugment and RandAugment (torchvision.transforms.v2) on uint8 training images, one image at a
time with its own seed: the engine's ``autoaugment`` stage option (ltbench.tricks), applied by the
in-memory splits (ltbench.data) and the image-file pipeline (ltbench.images). A leaf module: it imports
nothing of ltbench."""

from __future__ import annotations

from typing import Any

import torch


def augmentation_policy(name: str, h: int, w: int) -> Any:
    """torchvision.transforms.v2's AutoAugment (its CIFAR10 policy for 32x32 images, IMAGENET otherwise)
    or RandAugment (2 ops, magnitude 9, its defaults)."""
    from torchvision.transforms import v2

    if name == "autoaugment":
        policy = v2.AutoAugmentPolicy.CIFAR10 if (h, w) == (32, 32) else v2.AutoAugmentPolicy.IMAGENET
        return v2.AutoAugment(policy)
    if name == "randaugment":
        return v2.RandAugment()
    raise ValueError(f"unknown augmentation policy {name!r}")


def describe_policy(name: str, splits: Any) -> str:
    """What ``augmentation_policy`` gives the training images of ``splits`` (in memory: their size; image
    files: their crop), for the record."""
    if name == "randaugment":
        return "RandAugment(num_ops=2, magnitude=9), per image"
    x = getattr(getattr(splits, "train", None), "x", None)
    crop = getattr(getattr(splits, "transform", None), "crop", None)
    size = tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) and x.ndim == 4 else (crop, crop) if crop else None
    policy = "CIFAR10 policy" if size == (32, 32) else "IMAGENET policy" if size else "CIFAR10 policy on 32x32 images, " \
        "IMAGENET otherwise"
    return f"AutoAugment({policy}), per image"


def auto_augment(x: torch.Tensor, seeds: list[int], name: str) -> torch.Tensor:
    """``name``'s policy applied to each uint8 image of ``x`` (N, C, H, W) on its own: image i's random
    choices come from torch's global generator seeded with ``seeds[i]`` (restored afterwards)."""
    policy = augmentation_policy(name, x.shape[-2], x.shape[-1])
    out = []
    with torch.random.fork_rng(devices=[]):
        for img, seed in zip(x, seeds, strict=True):
            torch.random.default_generator.manual_seed(seed)
            out.append(policy(img))
    return torch.stack(out)
