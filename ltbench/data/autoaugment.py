"""AutoAugment and RandAugment (torchvision.transforms.v2) on uint8 training images, one image at a
time with its own seed: the engine's ``autoaugment`` stage option (ltbench.engine.stage_options), applied by the
in-memory splits (ltbench.data.splits) and the image-file pipeline (ltbench.data.images). A leaf module: it imports
nothing of ltbench."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


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


# ------------------------------------------------------------------------------------------------------
# RandAugment as timm's ``rand_augment_transform("rand-n2-m10-mstd0.5")``, the classification view of BCL
# (FlamieZhu/Balanced-Contrastive-Learning, main.py and its randaugment.py): ``num_ops`` ops drawn
# uniformly with replacement from RAND_OPS; each applies with probability 0.5, at a magnitude drawn
# N(magnitude, magnitude_std) and clipped to [0, 10]; rotation, shear and translation take a random sign
# and a random resampling filter (bilinear or bicubic), and fill with the ImageNet mean in uint8. The ops
# follow Pillow's on uint8 images (ImageOps, ImageEnhance, Image.transform), batched per op on the device.
# ------------------------------------------------------------------------------------------------------

RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeTpu", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_FILL = (124, 116, 104)  # their img_mean: round(255 x (0.485, 0.456, 0.406))
MAX_LEVEL = 10.0


def rand_augment_draws(n: int, gen: torch.Generator, num_ops: int = 2, magnitude: float = 10.0,
                       magnitude_std: float = 0.5) -> dict[str, torch.Tensor]:
    """The random choices of one batch of ``n`` images, (n, num_ops) each, on the CPU from ``gen`` in a
    fixed order: the op, whether it applies (p 0.5), its magnitude, its sign, bicubic (else bilinear)."""
    shape = (n, num_ops)
    return {"op": torch.randint(0, len(RAND_OPS), shape, generator=gen),
            "apply": torch.rand(shape, generator=gen) < 0.5,
            "magnitude": (magnitude + magnitude_std * torch.randn(shape, generator=gen, dtype=torch.float64)
                          ).clamp(0.0, MAX_LEVEL),
            "negate": torch.rand(shape, generator=gen) < 0.5,
            "bicubic": torch.rand(shape, generator=gen) < 0.5}


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion on uint8 images (N, C, H, W) -> (N, 1, H, W) int32 (1 channel: itself)."""
    x = x.to(torch.int32)
    if x.shape[1] != 3:
        return x[:, :1]
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, x, factor) on uint8: d + f (x - d), clipped, truncated."""
    f = factor.to(torch.float32).view(-1, 1, 1, 1)
    d = degenerate.to(torch.float32)
    return (d + f * (x.to(torch.float32) - d)).clamp(0, 255).to(torch.uint8)


def _lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Each channel of each image through its own table ``lut`` (N, C, 256)."""
    n, c, h, w = x.shape
    return lut.to(torch.uint8).gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, x.reshape(n * c, -1).long(), torch.ones_like(x.reshape(n * c, -1), dtype=torch.int64)
                             ).view(n, c, 256)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (no cutoff): each channel's [lo, hi] stretched to [0, 255], int() of the map."""
    hist = _histogram(x) > 0
    ramp = torch.arange(256, device=x.device, dtype=torch.float64)
    lo = torch.where(hist, ramp, torch.full_like(ramp, 256.0)).amin(2, keepdim=True)
    hi = torch.where(hist, ramp, torch.full_like(ramp, -1.0)).amax(2, keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1.0)
    lut = (ramp * scale - lo * scale).trunc().clamp(0, 255)
    return _lut(x, torch.where(hi > lo, lut, ramp))


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize: each channel through the table of its cumulative histogram."""
    hist = _histogram(x)
    ramp = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, ramp, torch.full_like(ramp, -1)).amax(2, keepdim=True)
    step = (hist.sum(2, keepdim=True) - hist.gather(2, last.clamp_min(0))) // 255
    before = hist.cumsum(2) - hist  # the images below each level
    lut = (step // 2 + before) // step.clamp_min(1)
    keep = ((hist > 0).sum(2, keepdim=True) <= 1) | (step == 0)
    return _lut(x, torch.where(keep, ramp.expand_as(lut), lut.clamp(max=255)))


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13, rounded; the border rows and columns kept)."""
    n, c, h, w = x.shape
    k = torch.ones(3, 3, device=x.device)
    k[1, 1] = 5
    y = F.conv2d(x.to(torch.float32).reshape(n * c, 1, h, w), (k / 13).view(1, 1, 3, 3)).view(n, c, h - 2, w - 2)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = (y + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """The cubic kernel of Pillow's affine transforms (Geometry.c's BICUBIC: a = -1, where its resize uses
    -0.5 and torch's grid_sample -0.75) at the four taps -1, 0, 1, 2 around a point at fraction ``t``."""
    a = -1.0
    d = torch.stack([1 + t, t, 1 - t, 2 - t], dim=-1).abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _sample(x: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor, taps: int) -> torch.Tensor:
    """Pillow's bilinear (``taps`` 2) or bicubic (4) filter at the points (xin, yin) (N, H, W) in pixel
    units: neighbours clamped to the image, weights from the point's offset to the pixel centres."""
    n, c, h, w = x.shape
    xs, ys = xin - 0.5, yin - 0.5
    x0, y0 = xs.floor(), ys.floor()
    tx, ty = xs - x0, ys - y0
    if taps == 2:
        wx, wy = torch.stack([1 - tx, tx], -1), torch.stack([1 - ty, ty], -1)
        offsets = torch.arange(0, 2, device=x.device)
    else:
        wx, wy = _cubic_weights(tx), _cubic_weights(ty)
        offsets = torch.arange(-1, 3, device=x.device)
    cols = (x0.long()[..., None] + offsets).clamp(0, w - 1)  # (N, H, W, taps)
    rows = (y0.long()[..., None] + offsets).clamp(0, h - 1)
    flat = x.to(torch.float64).reshape(n, c, h * w)

    def row(i: int) -> torch.Tensor:  # the taps of row i combined along x, as Pillow: in double
        vals = [flat.gather(2, (rows[..., i] * w + cols[..., j]).reshape(n, 1, -1).expand(n, c, -1))
                .view(n, c, *xin.shape[1:]) for j in range(taps)]
        if taps == 2:
            return vals[0] + (vals[1] - vals[0]) * tx[:, None]
        return sum(wx[..., j][:, None] * vals[j] for j in range(taps))

    rows_x = [row(i) for i in range(taps)]
    if taps == 2:
        return rows_x[0] + (rows_x[1] - rows_x[0]) * ty[:, None]
    return sum(wy[..., i][:, None] * rows_x[i] for i in range(taps))


def _affine(x: torch.Tensor, m: torch.Tensor, bicubic: torch.Tensor, fill: tuple[int, ...]) -> torch.Tensor:
    """Image.transform(AFFINE, m) per image: output pixel centre (u, v) samples the input at (m0 u + m1 v + m2,
    m3 u + m4 v + m5) (pixel units, centres at k + 0.5) with the image's filter (bicubic or bilinear); a
    point outside the image takes ``fill``."""
    n, c, h, w = x.shape
    m = m.to(x.device, torch.float64)
    v, u = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float64) + 0.5,
                          torch.arange(w, device=x.device, dtype=torch.float64) + 0.5, indexing="ij")
    xin = m[:, 0, None, None] * u + m[:, 1, None, None] * v + m[:, 2, None, None]
    yin = m[:, 3, None, None] * u + m[:, 4, None, None] * v + m[:, 5, None, None]
    out = torch.empty(n, c, h, w, device=x.device, dtype=torch.float64)
    for taps, pick in ((4, bicubic), (2, ~bicubic)):  # each image through its own filter only
        idx = pick.nonzero().squeeze(1).to(x.device)
        if len(idx):
            out[idx] = _sample(x[idx], xin[idx], yin[idx], taps)
    out = out.clamp(0, 255).trunc()
    inside = ((xin >= 0) & (xin < w) & (yin >= 0) & (yin < h))[:, None]
    value = torch.tensor(fill[:c], device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return torch.where(inside, out, value).to(torch.uint8)


def _geometry(name: str, level: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The affine matrices (N, 6) of Pillow's call for ``name`` at signed ``level`` (float64)."""
    one, zero = torch.ones_like(level), torch.zeros_like(level)
    if name == "ShearX":
        return torch.stack([one, level, zero, zero, one, zero], 1)
    if name == "ShearY":
        return torch.stack([one, zero, zero, level, one, zero], 1)
    if name == "TranslateXRel":
        return torch.stack([one, zero, level * w, zero, one, zero], 1)
    if name == "TranslateYRel":
        return torch.stack([one, zero, zero, zero, one, level * h], 1)
    a = -torch.deg2rad(level)  # Image.rotate: counter-clockwise about the centre
    cx, cy = w / 2.0, h / 2.0
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], 1)


def rand_augment_op(name: str, x: torch.Tensor, magnitude: torch.Tensor, negate: torch.Tensor,
                    bicubic: torch.Tensor, fill: tuple[int, ...] = RAND_FILL) -> torch.Tensor:
    """One op of RAND_OPS on uint8 images ``x`` (N, C, H, W), each at its own ``magnitude`` (N,) in [0, 10]
    (float64), ``negate`` (its sign) and ``bicubic`` (its filter), with timm's magnitude-to-argument maps."""
    frac = magnitude / MAX_LEVEL
    sign = torch.where(negate, -1.0, 1.0).to(torch.float64)
    dev = x.device

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(dev).view(-1, 1, 1, 1)

    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return 255 - x
    if name == "PosterizeTpu":  # keep int(4 m / 10) bits
        bits = (frac * 4).trunc().to(torch.int64)
        mask = (255 - (2 ** (8 - bits) - 1)).to(torch.uint8)
        return x & per(mask)
    if name == "Solarize":  # invert the levels >= int(256 m / 10)
        return torch.where(x.to(torch.int64) >= per((frac * 256).trunc().to(torch.int64)), 255 - x, x)
    if name == "SolarizeAdd":  # add int(110 m / 10) to the levels below 128
        added = (x.to(torch.int64) + per((frac * 110).trunc().to(torch.int64))).clamp(max=255).to(torch.uint8)
        return torch.where(x < 128, added, x)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):  # factor in [0.1, 1.9]
        factor = (frac * 1.8 + 0.1).to(dev)
        if name == "Color":
            degenerate = _luma(x).expand_as(x)
        elif name == "Contrast":
            mean = _luma(x).to(torch.float64).mean(dim=(1, 2, 3), keepdim=True)
            degenerate = (mean + 0.5).trunc().expand_as(x)
        elif name == "Brightness":
            degenerate = torch.zeros_like(x)
        else:
            degenerate = _smooth(x)
        return _blend(degenerate, x, factor)
    scale = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "TranslateXRel": 0.45, "TranslateYRel": 0.45}[name]
    m = _geometry(name, frac * scale * sign, x.shape[-2], x.shape[-1])
    return _affine(x, m, bicubic, fill)


def rand_augment(x: torch.Tensor, draws: dict[str, torch.Tensor], fill: tuple[int, ...] = RAND_FILL) -> torch.Tensor:
    """timm's RandAugment on uint8 images ``x`` (N, C, H, W) with the choices ``draws`` (rand_augment_draws):
    op slot by op slot, each op applied at once to the images that drew it."""
    out = x.clone()
    for k in range(draws["op"].shape[1]):
        for i, name in enumerate(RAND_OPS):
            pick = (draws["op"][:, k] == i) & draws["apply"][:, k]
            if not bool(pick.any()):
                continue
            idx = pick.nonzero().squeeze(1)
            sub = idx.to(x.device)
            out[sub] = rand_augment_op(name, out[sub], draws["magnitude"][idx, k], draws["negate"][idx, k],
                                       draws["bicubic"][idx, k], fill)
    return out
