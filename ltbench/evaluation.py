"""Evaluation: logits of a split, accuracies (overall, per class, many/medium/few), classifier norms."""

from __future__ import annotations

from typing import Any

import torch

from .data import FeatureSplits, ShotRule, Splits, TensorSet


@torch.no_grad()
def predict(model: torch.nn.Module, splits: Splits, split: str, device: torch.device,
            flip_average: bool = False, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits (on the CPU) and labels of a split; with ``flip_average`` the logits are the
    mean over the image and its horizontal mirror."""
    was_training = model.training
    model.eval()
    outs, labels = [], []
    for x, y in splits.eval_batches(split, batch_size, device):
        with autocast(device):
            z = model(to_memory_format(x, device)).float()
            if flip_average:
                z = (z + model(to_memory_format(x.flip(3), device)).float()) / 2
        outs.append(z.cpu())
        labels.append(y.cpu())
    model.train(was_training)
    c = splits.num_classes
    return (torch.cat(outs) if outs else torch.empty(0, c)), (torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))


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
    """Run the frozen feature extractor (eval mode) once over train, val and test, unaugmented."""
    was_training = features.training
    features.eval()
    out = {}
    for split in ("train", "val", "test"):
        xs, ys = [], []
        for x, y in splits.eval_batches(split, bs, device):
            with autocast(device):
                xs.append(features(to_memory_format(x, device)).float())
            ys.append(y)
        out[split] = TensorSet(torch.cat(xs), torch.cat(ys)) if xs else \
            TensorSet(torch.empty(0, 0, device=device), torch.empty(0, dtype=torch.long, device=device))
    features.train(was_training)
    return FeatureSplits(out["train"], out["val"], out["test"], splits)
