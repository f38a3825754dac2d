"""Evaluation: logits of a split, accuracies (overall, per class, many/medium/few), classifier norms."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from .data import FeatureSplits, ShotRule, Splits, TensorSet
from .store import atomic_write_bytes


@torch.no_grad()
def predict(model: torch.nn.Module, splits: Splits, split: str, device: torch.device, mirrored: bool = False,
            batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits (on the CPU) and labels of a split, or with ``mirrored`` of its horizontally
    mirrored images (the flip-averaged accuracy uses the mean of both)."""
    was_training = model.training
    model.eval()
    outs, labels = [], []
    for x, y in splits.eval_batches(split, batch_size, device, flip=mirrored):
        with autocast(device):
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


def classifier_norms(model: torch.nn.Module) -> list[float]:
    """L2 norm of each class row of the final linear classifier."""
    w = model.classifier.weight.detach().float()
    return w.norm(dim=1).tolist()


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; a no-op elsewhere (the CPU path stays float32 and deterministic)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def to_memory_format(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@torch.no_grad()
def extract_features(features: torch.nn.Module, splits: Splits, device: torch.device, bs: int = 256) -> FeatureSplits:
    """Run the frozen feature extractor (eval mode) once over train, val and test, unaugmented, and
    over the mirrored test images where the benchmark reports flip-averaged accuracy."""
    was_training = features.training
    features.eval()
    out = {}
    views = [("train", False), ("val", False), ("test", False)] + ([("test", True)] if splits.augment.flip else [])
    for split, flip in views:
        xs, ys = [], []
        for x, y in splits.eval_batches(split, bs, device, flip=flip):
            with autocast(device):
                xs.append(features(to_memory_format(x, device)).float())
            ys.append(y)
        out[split + ("_flip" if flip else "")] = TensorSet(torch.cat(xs), torch.cat(ys)) if xs else \
            TensorSet(torch.empty(0, 0, device=device), torch.empty(0, dtype=torch.long, device=device))
    features.train(was_training)
    return FeatureSplits(out["train"], out["val"], out["test"], splits, out.get("test_flip"))


VIEWS = ("train", "val", "test", "test_flip")


def feature_key(features: torch.nn.Module, data: dict[str, Any], device: torch.device, bs: int) -> str:
    """Content address of extracted features: the extractor's weights and buffers, the benchmark's
    data parameters, the device type (bf16 on CUDA) and the batch size. Equal keys, equal features."""
    h = hashlib.sha256(json.dumps({"data": data, "device": device.type, "batch": bs}, sort_keys=True).encode())
    for name, t in features.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_features(feats: FeatureSplits, path: Path) -> None:
    buf = io.BytesIO()
    torch.save({f"{v}_{k}": getattr(getattr(feats, v), k).cpu() for v in VIEWS if getattr(feats, v) is not None
                for k in "xy"}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_features(path: Path, splits: Splits, device: torch.device) -> FeatureSplits | None:
    """Features saved by ``save_features`` for these splits, on ``device``; None when the file is
    missing, unreadable or does not fit the splits (then they are extracted again)."""
    views = VIEWS if splits.augment.flip else VIEWS[:3]
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        sets = {v: TensorSet(d[f"{v}_x"].to(device), d[f"{v}_y"].to(device)) for v in views}
    except Exception:
        return None
    for v, ts in sets.items():
        if len(ts.x) != len(ts) or not torch.equal(ts.y.cpu(), getattr(splits, v.removesuffix("_flip")).y.cpu()):
            return None
    return FeatureSplits(sets["train"], sets["val"], sets["test"], splits, sets.get("test_flip"))
