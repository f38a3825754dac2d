"""The learning-rate schedule of a stage: warm-up, cosine or step decay, stepped per step or per
epoch, and the peak lr after linear scaling with the batch size."""

from __future__ import annotations

import math
from typing import Any

from ..spec.schema import settings_of


def lr_factor(hp: dict[str, Any], t: float) -> float:
    """Learning-rate multiplier at fractional epoch ``t`` (0 <= t < epochs): linear warm-up over
    ``warmup_epochs``, then cosine decay to 0 or step decay by ``gamma`` at each milestone. With
    ``lr_update=epoch`` the lr changes once per epoch, at its start, to the value at the epoch's end
    (the WB authors' code: epoch e of a cosine schedule at 0.5 (1 + cos(pi (e + 1) / E)), the last at 0); with
    ``lr_update=epoch_start`` to the value at its start (torch's CosineAnnealingLR stepped after each epoch, as
    LIFT's code: 0.5 (1 + cos(pi e / E)), the first epoch at the peak, the last above 0)."""
    epochs, warm = hp["epochs"], hp["warmup_epochs"]
    update = settings_of(hp).lr_update
    if update == "epoch":
        t = math.floor(t) + 1.0
    elif update == "epoch_start":
        t = float(math.floor(t))
    if warm > 0 and t < warm:
        stepwise = hp["schedule"] == "step" or update == "epoch_start"  # a warm-up epoch at the value of its end
        return (math.floor(t) + 1) / warm if stepwise else (t + 1e-9) / warm
    if hp["schedule"] == "cosine":
        span = max(epochs - warm, 1e-9)
        return 0.5 * (1 + math.cos(math.pi * min(t - warm, span) / span))
    if hp["schedule"] == "step":
        done = math.floor(t)
        return hp["gamma"] ** sum(done >= m * epochs for m in hp["milestones"])
    return 1.0


def effective_lr(hp: dict[str, Any]) -> float:
    """The stage's peak lr: ``lr``, scaled by batch_size / base_batch under ``lr_scaling=linear``
    (batch_size is the global batch, whatever the number of GPUs)."""
    if settings_of(hp).lr_scaling == "linear":
        return hp["lr"] * hp["batch_size"] / settings_of(hp).base_batch
    return hp["lr"]
