"""LDAM-DRW (Cao et al. 2019): label-distribution-aware margins on cosine logits scaled by s, with
deferred re-weighting: from ``drw_start`` (a fraction of the epochs, 160/200) the loss is weighted by
class-balanced weights (beta 0.9999)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltbench.method import Method, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

from .cb import BETA, cb_weights

# LDAM's margin and deferred re-weighting, declared once (ride takes them too, and beta for its DRW weights).
MAX_M = Setting("max_m", 0.5, "LDAM's largest margin (the rarest class's); class j's is proportional to "
                "n_j^(-1/4)", "loss", low=0)
DRW_START = Setting("drw_start", 0.8, "fraction of the epochs before deferred re-weighting (DRW) starts",
                    "re-weighting", low=0, high=1)


class NormedLinear(nn.Module):
    """Cosine classifier: logits are cosines between the normalised feature and class rows."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def ldam_margins(counts: list[int], max_m: float) -> torch.Tensor:
    m = torch.tensor(counts, dtype=torch.float64).clamp_min(1).pow(-0.25)
    return (m * (max_m / m.max())).float()


@methods.register()
class LDAMDRW(Method):
    name = "ldam_drw"
    presentation = Presentation(order=20)
    description = "LDAM loss with deferred re-weighting (Cao et al. 2019)"
    settings = (MAX_M, Setting("s", 30.0, "scale of the cosine logits", "loss", low=0, low_open=True), DRW_START,
                BETA)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"max_m": 0.5, "s": 30.0, "drw_start": 0.8, "beta": 0.9999}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        if not isinstance(model.classifier, NormedLinear):
            old = model.classifier
            model.classifier = NormedLinear(old.in_features, old.out_features).to(old.weight.device)
        ctx.state["margins"] = ldam_margins(ctx.class_counts, ctx.hp["max_m"]).to(ctx.device)
        ctx.state["drw_weights"] = cb_weights(ctx.class_counts, ctx.hp["beta"]).to(ctx.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        margins = ctx.state["margins"]  # on the training device since prepare
        adjusted = logits - F.one_hot(targets, logits.shape[1]) * margins[targets][:, None]
        drw = ctx.epoch >= int(round(ctx.hp["drw_start"] * ctx.hp["epochs"]))
        weight = ctx.state["drw_weights"] if drw else None
        return F.cross_entropy(ctx.hp["s"] * adjusted, targets, weight=weight)
