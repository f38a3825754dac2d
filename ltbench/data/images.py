"""The image pipeline of the split-file benchmarks (ImageNet-LT, iNaturalist 2018, Places-LT):
reading, decoding and the standard ImageNet-style augmentation of image files, batched for the engine
(the split lists themselves: ``ltbench.data.splitfile``, which imports this module, never the reverse).

``ImageFileSplits`` offers the engine the interface ``ltbench.data.splits.TrainSplits``, as ``ltbench.data.splits.Splits``
does:

- the epoch's order comes from ``ltbench.data.splits.sample_indices`` and one seed per image is drawn from
  the epoch generator; every random choice of an image's augmentation comes from its own seed, so a
  batch is a pure function of (seed, epoch) whatever the number of DataLoader workers;
- workers (``LTBENCH_WORKERS``, default min(8, CPUs)) read the files; on the CPU they also decode and
  augment, and hand uint8 crops to the main process, which normalises on the training device;
- with CUDA the workers only read bytes and the main process decodes each batch on the GPU
  (``torchvision.io.decode_jpeg(device="cuda")``) and augments it there (``LTBENCH_DECODE``:
  ``auto`` (default), ``workers`` or ``device`` forces one path).

Train: RandomResizedCrop(crop, scale 0.08..1, ratio 3/4..4/3) + horizontal flip (+ ColorJitter
brightness/contrast/saturation, in a random order, as torchvision's ColorJitter). Test: Resize(resize)
of the shorter side + CenterCrop(crop). Both on uint8 tensors with torchvision.transforms.v2, antialiased.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

from ..errors import LtbenchError
from .autoaugment import auto_augment
from .splitlist import SplitList
from .splits import Augment, ShotRule, normalize, sample_indices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHUNK = 32  # images per worker task; batches are assembled from chunks in order


# ---------------------------------------------------------------------------------------------
# transforms


def crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
             g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop, torchvision's algorithm (ten tries at a
    random area and aspect ratio, then a central crop), with every draw taken from ``g``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=g).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass(frozen=True)
class ImageTransform:
    """The train and test transforms of uint8 (3, H, W) images, on whatever device they live."""

    crop: int = 224
    resize: int = 256
    color_jitter: float = 0.4  # brightness, contrast and saturation factors in [1 - j, 1 + j]; 0: none
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    autoaugment: str = "none"  # none | autoaugment | randaugment: after crop and flip (a stage option)

    def train(self, img: torch.Tensor, seed: int) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF

        g = torch.Generator().manual_seed(seed)
        top, left, h, w = crop_box(img.shape[-2], img.shape[-1], self.scale, self.ratio, g)
        out = TF.resized_crop(img, top, left, h, w, [self.crop, self.crop], antialias=True)
        if float(torch.rand(1, generator=g)) < 0.5:
            out = TF.horizontal_flip(out)
        if self.autoaugment != "none":  # its choices from a seed drawn from this image's generator
            out = auto_augment(out[None], torch.randint(0, 2**62, (1,), generator=g).tolist(), self.autoaugment)[0]
        if self.color_jitter > 0:
            j = self.color_jitter
            factors = (1 - j + 2 * j * torch.rand(3, generator=g)).tolist()
            ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
            for k in torch.randperm(3, generator=g).tolist():
                out = ops[k](out, factors[k])
        return out

    def eval(self, img: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF

        out = TF.resize(img, [self.resize], antialias=True)
        return TF.center_crop(out, [self.crop, self.crop])

    def describe(self) -> dict[str, str]:
        jitter = f" + ColorJitter({self.color_jitter:g}, {self.color_jitter:g}, {self.color_jitter:g})" \
            if self.color_jitter > 0 else ""
        return {"train": f"RandomResizedCrop({self.crop}, scale={self.scale}) + RandomHorizontalFlip{jitter}",
                "test": f"Resize({self.resize}) + CenterCrop({self.crop})",
                "normalize": f"mean {IMAGENET_MEAN}, std {IMAGENET_STD}"}


# ---------------------------------------------------------------------------------------------
# reading and decoding


class ImageReadError(Exception):
    """Why an image cannot be used; ``fix``: what to do about it, when not "restore the file"."""

    def __init__(self, reason: str, fix: str | None = None):
        super().__init__(reason)
        self.fix = fix


# Pixels an image may have (all frames of a GIF together): PIL's decompression-bomb limit,
# 1024 * 1024 * 1024 // 4 // 3 (a 9459 x 9459 image, 256 MiB as RGB). $LTBENCH_MAX_PIXELS changes it; it
# is never part of a spec (an image over the limit stops a run, it never changes what a run computes).
MAX_PIXELS = 89_478_485
FORMATS = "JPEG, PNG, GIF or WebP"


def max_pixels() -> int:
    """$LTBENCH_MAX_PIXELS, else MAX_PIXELS."""
    text = os.environ.get("LTBENCH_MAX_PIXELS")
    if text is None:
        return MAX_PIXELS
    if not text.strip().isdigit() or int(text) < 1:
        raise LtbenchError(f"LTBENCH_MAX_PIXELS={text!r}: expected the most pixels an image may have (a positive "
                           f"number; default {MAX_PIXELS:,}).")
    return int(text)


def image_format(head: bytes) -> str | None:
    """"jpeg", "png", "gif" or "webp" from a file's first 12 bytes (as torchvision tells them apart); None
    for anything else."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"GIF8":
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _u16(data: bytes, at: int, order: str = "big") -> int:
    return int.from_bytes(data[at:at + 2], order)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn), found by walking the marker segments."""
    pos = 2
    while pos + 9 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _u16(data, pos + 7), _u16(data, pos + 5)
        elif marker == 0xDA:  # the scan began before any frame header
            return None
        else:
            pos += 2 + _u16(data, pos + 2)
    return None


def _gif_pixels(data: bytes) -> int | None:
    """The pixels a GIF decodes to: each frame as large as the canvas or as its own rectangle, if larger."""
    canvas = _u16(data, 6, "little") * _u16(data, 8, "little")
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    total = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x2C and pos + 10 <= len(data):  # an image: its rectangle, colour table, LZW data
            total += max(canvas, _u16(data, pos + 5, "little") * _u16(data, pos + 7, "little"))
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        elif block == 0x21:  # an extension: its label, then its data
            pos += 2
        else:  # the trailer, or damage the decoder will report
            break
        while pos < len(data) and data[pos]:  # data sub-blocks, up to an empty one
            pos += 1 + data[pos]
        pos += 1
    return max(total, canvas)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        return _u16(data, 26, "little") & 0x3FFF, _u16(data, 28, "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_pixels(data: bytes, fmt: str) -> int | None:
    """The pixels an image of format ``fmt`` decodes to, from its header (before any decoding); None
    when the header is too damaged to tell (the decoder then says why)."""
    if fmt == "png":
        return int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big") if len(data) >= 24 else None
    if fmt == "gif":
        return _gif_pixels(data) if len(data) >= 13 else None
    size = _jpeg_size(data) if fmt == "jpeg" else _webp_size(data)
    return size[0] * size[1] if size else None


def _not_an_image(head: bytes) -> ImageReadError:
    return ImageReadError(f"cannot decode it (not a {FORMATS} image: the file begins {head!r})",
                          "Replace it with an image, or remove it")


def check_image(data: bytes, limit: int) -> str:
    """The format of an encoded image; ImageReadError when it is none that decode_rgb reads, or when
    it has more than ``limit`` pixels (read from its header: nothing is decoded)."""
    fmt = image_format(data[:12])
    if fmt is None:
        raise _not_an_image(data[:16])
    pixels = image_pixels(data, fmt)
    if pixels is not None and pixels > limit:
        raise ImageReadError(
            f"{fmt.upper()} of {pixels:,} pixels, over the limit of {limit:,} (LTBENCH_MAX_PIXELS; a "
            f"decompression bomb, or a huge scan)", "Shrink the image or remove it, or raise the limit with "
            "LTBENCH_MAX_PIXELS=N (an environment variable, not part of any spec)")
    return fmt


def read_image_bytes(path: Path, limit: int | None = None) -> torch.Tensor:
    """The encoded file as a uint8 tensor; ImageReadError when it is missing, unreadable, empty, not an
    image decode_rgb reads, or over ``limit`` pixels (default ``max_pixels()``)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageReadError(exc.strerror or type(exc).__name__) from None
    if not data:
        raise ImageReadError("empty file")
    check_image(data, max_pixels() if limit is None else limit)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_rgb(data: torch.Tensor) -> torch.Tensor:
    """Decode JPEG (grayscale and CMYK included), PNG, GIF or WebP bytes to uint8 RGB (3, H, W); an
    animated GIF gives its first frame. PNGs are decoded by PIL: torchvision's libpng decoder crashes the
    process (a segfault) on some damaged files, PIL raises an error; both give the same pixels."""
    from torchvision.io import ImageReadMode, decode_image

    fmt = image_format(data[:12].numpy().tobytes())
    if fmt is None:
        raise _not_an_image(data[:16].numpy().tobytes())
    if fmt == "png":
        return _decode_png(data.numpy().tobytes())
    try:
        img = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].rsplit(", ", 1)[-1]
        raise ImageReadError(f"cannot decode it ({reason})") from None
    return img[0] if img.ndim == 4 else img


def _decode_png(data: bytes) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import PngImagePlugin

    # PngImageFile itself, not Image.open: the pixel limit was checked from the header (check_image)
    try:
        with PngImagePlugin.PngImageFile(io.BytesIO(data)) as im:
            if data[24:25] == b"\x10":
                raise ImageReadError("cannot decode it (a PNG of 16 bits per channel; ltbench reads 8-bit "
                                     "images)", "Save it with 8 bits per channel, or remove it")
            rgb = np.array(im.convert("RGB"))
    except ImageReadError:
        raise
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageReadError(f"cannot decode it ({exc or type(exc).__name__})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def decode_on_device(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode a batch of JPEG bytes on ``device`` in one call (nvJPEG on CUDA); None for the images
    it cannot decode there (e.g. PNG files named .JPEG), to be decoded on the CPU."""
    try:
        return list(_decode_jpeg(datas, device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for d in datas:
            try:
                out.append(_decode_jpeg(d, device))
            except RuntimeError:
                out.append(None)
        return out


def _decode_jpeg(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    """torchvision's decode_jpeg on ``device``, made safe for the work queued before it on CUDA.

    torchvision allocates the decoded images on the current stream, from the caching allocator, but
    nvJPEG writes them on a private stream that does not wait for the current one; the allocator may
    hand out memory that kernels still queued on the current stream (the previous step's) read or
    write. Waiting for the current stream first closes that race; it costs a host sync per decoded
    batch, and the decode call syncs with the host anyway. (torchvision makes the current stream wait
    for the decode afterwards, so the images are safe to use.)"""
    from torchvision.io import ImageReadMode, decode_jpeg

    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


# ---------------------------------------------------------------------------------------------
# the engine-facing data object


@dataclass
class ImageFiles:
    """One split: image files under ``root`` and their labels."""

    root: Path
    paths: list[str]
    y: torch.Tensor
    source: SplitList  # where each entry was listed (file:line in messages)
    name: str = ""

    @staticmethod
    def from_list(root: Path, entries: SplitList, name: str) -> ImageFiles:
        return ImageFiles(Path(root), entries.paths, torch.tensor(entries.labels, dtype=torch.long), entries, name)

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.y, minlength=num_classes).tolist()


@dataclass
class _Failure:
    message: str


class _Chunks(torch.utils.data.Dataset):
    """Item k: the images of chunk k of an ordered selection of a split, read (and, when
    ``decode``, decoded and transformed: uint8 (n, 3, crop, crop)) by a DataLoader worker.
    ``seeds`` (one per image) selects the train transform; None the test transform."""

    def __init__(self, files: ImageFiles, order: torch.Tensor, seeds: torch.Tensor | None,
                 chunks: list[tuple[int, int]], transform: ImageTransform, decode: bool, benchmark: str):
        self.files, self.order, self.seeds, self.chunks = files, order, seeds, chunks
        self.transform, self.decode, self.benchmark = transform, decode, benchmark
        self.limit = max_pixels()  # read here, in the main process: a bad $LTBENCH_MAX_PIXELS is its error

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> Any:
        a, b = self.chunks[k]
        idx = self.order[a:b].tolist()
        seeds = self.seeds[a:b].tolist() if self.seeds is not None else [None] * len(idx)
        out: list[torch.Tensor] = []
        for i, seed in zip(idx, seeds, strict=True):
            try:
                data = read_image_bytes(self.files.root / self.files.paths[i], self.limit)
                if not self.decode:
                    out.append(data)
                    continue
                img = decode_rgb(data)
            except ImageReadError as exc:
                return _Failure(image_error(self.files, i, str(exc), self.benchmark, exc.fix))
            out.append(self.transform.train(img, seed) if seed is not None else self.transform.eval(img))
        return torch.stack(out) if self.decode else out


def image_error(files: ImageFiles, i: int, reason: str, benchmark: str, fix: str | None = None) -> str:
    return (f"image {files.root / files.paths[i]} (listed at {files.source.where(i)}): {reason}. "
            f"{fix or 'Restore the file, or check --data-root'}; `ltbench data check {benchmark} --root "
            f"{files.root} --full` lists every missing or broken image.")


class _DecodeProbe(torch.utils.data.Dataset):
    """Item k: None when image ``indices[k]`` reads and decodes, else why not (run in DataLoader workers)."""

    def __init__(self, root: Path, paths: list[str], indices: list[int], limit: int):
        self.root, self.paths, self.indices, self.limit = root, paths, indices, limit

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> str | None:
        try:
            decode_rgb(read_image_bytes(self.root / self.paths[self.indices[k]], self.limit))
        except ImageReadError as exc:
            return str(exc)
        return None


def worker_died(exc: BaseException) -> bool:
    """Whether a DataLoader's error is a worker process that died (e.g. a decoder's segfault)."""
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


def _probe(root: Path, paths: list[str], indices: list[int], workers: int,
           limit: int) -> tuple[list[str | None], str | None]:
    """Decode ``indices`` in ``workers`` (>= 1) worker processes: the results handed back, in order, up to
    the first worker that died, and what killed it (None when none did)."""
    loader = torch.utils.data.DataLoader(_DecodeProbe(root, paths, indices, limit), batch_size=None,  # type: ignore[arg-type]
                                         num_workers=workers)
    out: list[str | None] = []
    items = iter(loader)
    try:
        for _ in indices:
            out.append(next(items))
    except RuntimeError as exc:
        if not worker_died(exc):
            raise
        return out, str(exc).strip().splitlines()[0]
    finally:
        del items
    return out, None


def undecodable(root: Path, paths: list[str], indices: list[int], workers: int) -> list[tuple[int, str]]:
    """(index, why) for each of ``indices`` whose image does not read or decode. The images are decoded
    in worker processes (at least one), so a decoder that crashes its process (a segfault in a native
    library) cannot take the caller down: the image that did is found by decoding it alone, and reported."""
    import torchvision.io  # noqa: F401 (imported once here, before the workers fork, not once in each)
    from PIL import PngImagePlugin  # noqa: F401

    limit = max_pixels()
    bad: list[tuple[int, str]] = []
    rest = list(indices)
    while rest:
        done, died = _probe(root, paths, rest, max(1, workers), limit)
        bad += [(i, why) for i, why in zip(rest, done, strict=False) if why is not None]
        rest = rest[len(done):]
        if died is None or not rest:
            break
        alone, died_alone = _probe(root, paths, rest[:1], 1, limit)  # the first image not handed back
        if died_alone is not None:
            bad.append((rest[0], f"cannot decode it: the decoder crashed its process ({died_alone})"))
        elif alone[0] is not None:
            bad.append((rest[0], alone[0]))
        rest = rest[1:]
    return bad


def loader_workers() -> int:
    """DataLoader workers: $LTBENCH_WORKERS, else min(8, CPUs). Never part of a spec: results do not
    depend on it."""
    text = os.environ.get("LTBENCH_WORKERS")
    if text is None:
        return min(8, os.cpu_count() or 1)
    if not text.strip().isdigit():
        raise LtbenchError(f"LTBENCH_WORKERS={text!r}: expected a number of DataLoader workers (0 or more).")
    return int(text)


def decode_on(device: torch.device) -> str:
    """Where images are decoded: "workers" (CPU, in the DataLoader workers) or "device" (in the main
    process, batched on the training device). $LTBENCH_DECODE: auto (device on CUDA), workers, device."""
    mode = os.environ.get("LTBENCH_DECODE", "auto")
    if mode not in ("auto", "workers", "device"):
        raise LtbenchError(f"LTBENCH_DECODE={mode!r}: expected auto, workers or device.")
    if mode == "auto":
        return "device" if device.type == "cuda" else "workers"
    return mode


@dataclass
class ImageFileSplits:
    """The engine's view of an image-file benchmark (the interface ``ltbench.data.splits.TrainSplits``)."""

    train: ImageFiles
    val: ImageFiles
    test: ImageFiles
    num_classes: int
    transform: ImageTransform
    benchmark: str
    augment: Augment = Augment(crop_padding=0, flip=True)  # flip: the final report adds flip-averaged accuracy
    shot_rule: ShotRule = ShotRule(100, 20)
    info: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def class_counts(self) -> list[int]:
        return self.train.class_counts(self.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def train_batches(self, batch_size: int, sampler: str, gen: torch.Generator, device: torch.device,
                      augment: bool = True, autoaugment: str = "none") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches; ``autoaugment``: a policy per image after crop and flip
        (ImageTransform.train), deterministic per image seed and so per (seed, epoch)."""
        order = sample_indices(self.train.y, sampler, gen)
        seeds = torch.randint(0, 2**62, (len(order),), generator=gen) if augment else None
        transform = dataclasses.replace(self.transform, autoaugment=autoaugment) if autoaugment != "none" else None
        yield from self._batches(self.train, order, seeds, batch_size, device, drop_single=True, transform=transform)

    def eval_batches(self, split: str, batch_size: int, device: torch.device,
                     flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        files: ImageFiles = getattr(self, split)
        yield from self._batches(files, torch.arange(len(files)), None, batch_size, device, flip=flip)

    def _batches(self, files: ImageFiles, order: torch.Tensor, seeds: torch.Tensor | None, batch_size: int,
                 device: torch.device, drop_single: bool = False, flip: bool = False,
                 transform: ImageTransform | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        transform = transform or self.transform
        bounds = [(a, min(a + batch_size, len(order))) for a in range(0, len(order), batch_size)]
        if drop_single and bounds and bounds[-1][1] - bounds[-1][0] < 2:  # a batch of one breaks batch norm
            bounds.pop()
        chunks = [(c, min(c + CHUNK, b)) for a, b in bounds for c in range(a, b, CHUNK)]
        mode = decode_on(device)
        workers = loader_workers()
        self.info.setdefault("loader", {"decode": f"{mode} ({device.type})", "workers": workers})
        dataset = _Chunks(files, order, seeds, chunks, transform, mode == "workers", self.benchmark)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                             pin_memory=device.type == "cuda" and mode == "workers",
                                             prefetch_factor=4 if workers else None)
        items = iter(loader)
        k = 0  # chunks received
        try:
            for a, b in bounds:
                parts = []
                for _ in range(math.ceil((b - a) / CHUNK)):
                    parts.append(self._next_chunk(items, files, order, chunks[k:k + 4 * max(1, workers)], workers))
                    k += 1
                if mode == "workers":
                    x = torch.cat([p.to(device, non_blocking=True) for p in parts])
                else:
                    x = self._decode_batch(files, order[a:b], seeds[a:b] if seeds is not None else None,
                                           [d for p in parts for d in p], device, transform)
                if flip:
                    x = x.flip(3)
                yield self.normalize(x), files.y[order[a:b]].to(device, non_blocking=True)
        finally:
            # Stop the workers now, not whenever a traceback that holds this frame is collected (a
            # worker pool shut down late waits seconds for each worker).
            del items

    def _next_chunk(self, items: Iterator[Any], files: ImageFiles, order: torch.Tensor,
                    pending: list[tuple[int, int]], workers: int) -> Any:
        """The next chunk from the loader (``pending``: it and those the workers may be reading ahead);
        a failed image, or a worker that died (a decoder's crash), is an LtbenchError naming the image."""
        try:
            item = next(items)
        except RuntimeError as exc:
            if not worker_died(exc):
                raise
            candidates = [i for a, b in pending for i in order[a:b].tolist()]
            bad = undecodable(files.root, files.paths, candidates, workers)
            crashed = [(i, why) for i, why in bad if "crashed" in why] or bad
            if crashed:
                raise LtbenchError(image_error(files, crashed[0][0], crashed[0][1], self.benchmark,
                                               "Replace or remove it")) from None
            raise LtbenchError(f"a DataLoader worker reading the {files.name} images of {files.root} died "
                               f"({str(exc).strip().splitlines()[0]}); `ltbench data check {self.benchmark} --root "
                               f"{files.root} --full` decodes every image and names one that crashes.") from None
        if isinstance(item, _Failure):
            raise LtbenchError(item.message)
        return item

    def _decode_batch(self, files: ImageFiles, idx: torch.Tensor, seeds: torch.Tensor | None,
                      datas: list[torch.Tensor], device: torch.device, transform: ImageTransform) -> torch.Tensor:
        """Decode a batch in the main process on ``device`` (falling back to the CPU per image) and
        transform it there; the same transforms, and the same seeds, as the worker path."""
        decoded = decode_on_device(datas, device)
        out = []
        for k, (i, img) in enumerate(zip(idx.tolist(), decoded, strict=True)):
            if img is None:
                try:
                    img = decode_rgb(datas[k]).to(device)
                except ImageReadError as exc:
                    raise LtbenchError(image_error(files, i, str(exc), self.benchmark, exc.fix)) from None
            out.append(transform.train(img, int(seeds[k])) if seeds is not None else transform.eval(img))
        return torch.stack(out)
