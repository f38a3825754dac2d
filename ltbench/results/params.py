"""What tables say of pretrained backbones and parameter-efficient tuning, read from records (no torch):
the trainable-parameters column (``params`` of result.json: what trained in any stage of the run, and the
total) and the note under a table whose backbone was pretrained on the benchmark's images."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def trainable(group: list[dict[str, Any]]) -> dict[str, int] | None:
    """A cell's trainable and total parameters (the same for every seed of one configuration), None for
    records without them (older ltbench)."""
    params = next((r.get("params") for r in group if isinstance(r.get("params"), dict)), None)
    if not params or not isinstance(params.get("trainable"), int) or not params.get("total"):
        return None
    return {"trainable": params["trainable"], "total": params["total"]}


def trainable_text(stat: dict[str, int] | None) -> str:
    """"1.7K (1.5%)": the trainable parameters and their share of the total; "" without them."""
    if not stat:
        return ""
    n, total = stat["trainable"], stat["total"]
    return f"{_short(n)} ({100 * n / total:.3g}%)"


def _short(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def shows_trainable(records: Iterable[dict[str, Any]]) -> bool:
    """A table gets the column when one of its runs tuned a pretrained backbone or set a tuning mode: on
    from-scratch runs with every parameter trained it would say nothing."""
    for r in records:
        stages = (r.get("spec") or {}).get("stages") or {}
        if (r.get("method_record") or {}).get("backbone") or any(
                isinstance(hp, dict) and hp.get("tuning", "full") != "full" for hp in stages.values()):
            return True
    return False


def pretraining_notes(records: Iterable[dict[str, Any]]) -> list[str]:
    """One note per backbone and benchmark whose pretraining data holds the benchmark's images (e.g. an
    ImageNet-1k backbone on ImageNet-LT): the record's ``method_record.backbone.overlap``."""
    seen: dict[tuple[str, str], str] = {}
    for r in records:
        overlap = ((r.get("method_record") or {}).get("backbone") or {}).get("overlap")
        if overlap:
            seen.setdefault((str(r.get("backbone")), str(r.get("label") or r.get("benchmark"))), overlap)
    return [f"{backbone} on {label}: pretrained on images of this benchmark ({overlap})"
            for (backbone, label), overlap in sorted(seen.items())]
