"""Evaluation: logits of a split, accuracies (overall, per class, many/medium/few), classifier norms."""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data.splits import FeatureSplits, ShotRule, TensorSet, TrainSplits
from ..files import damage, recorded_sha256, write_checked, write_torch


@torch.no_grad()
def predict(model: torch.nn.Module, splits: TrainSplits, split: str, device: torch.device,
            mirrored: bool = False, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits (on the CPU) and labels of a split, or with ``mirrored`` of its horizontally
    mirrored images (the flip-averaged accuracy uses the mean of both). The model runs in float32, no
    autocast (``exact_arithmetic``): bf16 logits would tie often, and argmax sends ties to class 0."""
    was_training = model.training
    model.eval()
    outs, labels = [], []
    with exact_arithmetic(device):
        for x, y in splits.eval_batches(split, batch_size, device, flip=mirrored):
            outs.append(model(to_memory_format(x, device)).float())
            labels.append(y)
    model.train(was_training)
    if not outs:
        return torch.empty(0, splits.num_classes), torch.empty(0, dtype=torch.long)
    return torch.cat(outs).cpu(), torch.cat(labels).cpu()  # one copy to the host, not one per batch


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, train_counts: list[int],
                    rule: ShotRule) -> dict[str, Any]:
    """top1 (over images), class_mean (mean per-class accuracy over classes present in the split),
    per-class accuracy (None for a class with no images here), and many/medium/few: unweighted
    means over the classes of each group that have images (None for an empty group)."""
    num_classes = len(train_counts)
    pred = logits.argmax(1)
    correct = (pred == labels).float()
    n = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels, weights=correct, minlength=num_classes)
    per_class: list[float | None] = [
        (100.0 * float(hits[c]) / int(n[c])) if int(n[c]) > 0 else None for c in range(num_classes)
    ]
    present = [a for a in per_class if a is not None]
    report: dict[str, Any] = {
        "top1": 100.0 * float(correct.mean()) if len(labels) else None,
        "class_mean": sum(present) / len(present) if present else None,
        "n_images": int(len(labels)),
        "n_classes_present": len(present),
    }
    for group, classes in rule.groups(train_counts).items():
        vals = [per_class[c] for c in classes if per_class[c] is not None]
        report[group] = sum(vals) / len(vals) if vals else None
    report["per_class"] = per_class
    report["per_class_count"] = n.tolist()
    return report


TOP5_MIN_CLASSES = 100  # top-5 accuracy is recorded for benchmarks of this many classes or more


def top5_and_confusion(logits: torch.Tensor, labels: torch.Tensor, confusion: bool = True) -> dict[str, Any]:
    """What the final report adds to ``accuracy_report`` from the same logits: ``top5`` (%, the label among
    the five highest logits) where there are TOP5_MIN_CLASSES classes or more, and with ``confusion`` the
    misclassified images as sparse [true, predicted, count] triples sorted by (true, predicted): with
    ``per_class_count`` they give the whole confusion matrix, in at most one triple per image."""
    out: dict[str, Any] = {}
    num_classes = logits.shape[1] if logits.ndim == 2 else 0
    if num_classes >= TOP5_MIN_CLASSES:
        hit = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float()
        out["top5"] = 100.0 * float(hit.mean()) if len(labels) else None
    if confusion:
        pred = logits.argmax(1) if len(labels) else labels
        wrong = pred != labels
        pairs, counts = torch.unique(labels[wrong] * num_classes + pred[wrong], return_counts=True)
        out["confusion"] = [[int(k) // num_classes, int(k) % num_classes, int(n)]
                            for k, n in zip(pairs.tolist(), counts.tolist(), strict=True)]
    return out


def classifier_norms(model: torch.nn.Module) -> list[float]:
    """L2 norm of each class row of the final linear classifier (a model that defines its own
    ``classifier_norms()``, e.g. a multi-expert model, says what they are)."""
    own = getattr(model, "classifier_norms", None)
    if callable(own):
        return own()
    w = model.classifier.weight.detach().float()
    return w.norm(dim=1).tolist()


def autocast(device: torch.device) -> Any:
    """Training's autocast: bf16 on CUDA; a no-op elsewhere (the CPU path stays float32 and
    deterministic). Evaluation and feature extraction never use it (``exact_arithmetic``)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@contextlib.contextmanager
def exact_arithmetic(device: torch.device) -> Iterator[None]:
    """The arithmetic of evaluation and feature extraction: float32 (autocast off, even inside an
    autocast region) and cuDNN's deterministic convolution algorithms in place of the autotuned ones
    that training uses (``cudnn.benchmark``, whose choice can differ from one process to the next), so
    that the same weights give the same bits on the same GPU and software. The TF32 settings stay as
    they are (they are part of ``feature_key``). cuDNN's flags are restored afterwards."""
    off = torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu") else contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        with off:
            yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def to_memory_format(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@torch.no_grad()
def extract_features(features: torch.nn.Module, splits: TrainSplits, device: torch.device,
                     bs: int = 256) -> FeatureSplits:
    """Run the frozen feature extractor (eval mode) once over train, val and test, unaugmented, and
    over the mirrored test images where the benchmark reports flip-averaged accuracy. In float32 with
    deterministic convolutions (``exact_arithmetic``), as ``feature_key`` promises: the features serve
    the final report as well as training, and so are computed as ``predict`` computes logits."""
    was_training = features.training
    features.eval()
    out = {}
    views = [("train", False), ("val", False), ("test", False)] + ([("test", True)] if splits.augment.flip else [])
    for split, flip in views:
        xs, ys = [], []
        with exact_arithmetic(device):
            for x, y in splits.eval_batches(split, bs, device, flip=flip):
                xs.append(features(to_memory_format(x, device)).float())
                ys.append(y)
        out[split + ("_flip" if flip else "")] = TensorSet(torch.cat(xs), torch.cat(ys)) if xs else \
            TensorSet(torch.empty(0, 0, device=device), torch.empty(0, dtype=torch.long, device=device))
    features.train(was_training)
    return FeatureSplits(out["train"], out["val"], out["test"], splits, out.get("test_flip"))


VIEWS = ("train", "val", "test", "test_flip")


def feature_key(features: torch.nn.Module, data: dict[str, Any], device: torch.device, bs: int) -> str:
    """Content address of extracted features: the extractor's weights and buffers, the benchmark's
    data parameters, the batch size and what else decides their bits (``arithmetic``). Equal keys,
    equal features (``extract_features`` runs deterministic algorithms only)."""
    h = hashlib.sha256(json.dumps({"data": data, "batch": bs, **arithmetic(device)}, sort_keys=True).encode())
    for name, t in features.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# torch >= 2.9 holds float32 precision (TF32 or full float32) per backend and operator, each "none"
# when it follows its parent; older versions have the flags read in ``_fp32_precision``'s fallback.
_PRECISION_SETTINGS = ("fp32_precision", "cuda.matmul.fp32_precision", "cudnn.fp32_precision",
                       "cudnn.conv.fp32_precision", "mkldnn.fp32_precision", "mkldnn.matmul.fp32_precision",
                       "mkldnn.conv.fp32_precision")


def _fp32_precision() -> dict[str, str]:
    if not hasattr(torch.backends, "fp32_precision"):
        return {"matmul": torch.get_float32_matmul_precision(), "cudnn_tf32": str(torch.backends.cudnn.allow_tf32)}
    out = {}
    for name in _PRECISION_SETTINGS:
        try:
            out[name] = str(operator.attrgetter(name)(torch.backends))
        except AttributeError:
            pass
    return out


def arithmetic(device: torch.device) -> dict[str, Any]:
    """What decides the bits of features extracted on ``device``, besides the weights, the data and the
    batch size: the device (type; on CUDA the GPU model), torch's version (and CUDA's and cuDNN's), the
    float32 precision settings (TF32 or not), and on CUDA where JPEG images are decoded (nvJPEG gives
    other pixels than the CPU's libjpeg). cuDNN's autotuning is not in it: extraction never uses it."""
    from ..data.images import decode_on

    out: dict[str, Any] = {"device": device.type, "torch": torch.__version__, "fp32": _fp32_precision()}
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   jpeg_decode="nvjpeg" if decode_on(device) == "device" else "cpu")
    elif device.type == "cpu":
        out["cpu"] = torch.backends.cpu.get_cpu_capability()
    return out


def save_features(feats: FeatureSplits, path: Path) -> None:
    """Keep extracted features in ``path``, with their sha256 recorded beside them (ltbench.files)."""
    tensors = {f"{v}_{k}": getattr(getattr(feats, v), k).cpu() for v in VIEWS if getattr(feats, v) is not None
               for k in "xy"}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checked(path, lambda tmp: write_torch(tensors, tmp))  # equal features, equal bytes


def load_features(path: Path, splits: TrainSplits, device: torch.device) -> tuple[FeatureSplits | None, str]:
    """Features saved by ``save_features`` for these splits, on ``device``, and "" ; or None and why
    not: the file is missing, has no recorded checksum or does not match it, cannot be read, or does
    not fit the splits (then they are extracted again)."""
    views = VIEWS if splits.augment.flip else VIEWS[:3]
    problem = damage(path) or (None if recorded_sha256(path) else "without a recorded checksum")
    if problem is not None:
        return None, problem
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        sets = {v: TensorSet(d[f"{v}_x"].to(device), d[f"{v}_y"].to(device)) for v in views}
    except Exception as exc:
        return None, f"unreadable ({type(exc).__name__})"
    for v, ts in sets.items():
        if len(ts.x) != len(ts) or not torch.equal(ts.y.cpu(), getattr(splits, v.removesuffix("_flip")).y.cpu()):
            return None, f"not features of these splits ({v} differs)"
    return FeatureSplits(sets["train"], sets["val"], sets["test"], splits, sets.get("test_flip")), ""
