"""LWS (Kang et al. 2020): learnable weight scaling. Logits z = s * (W f + b) with one learned scale
per class (init 1); W, b and the backbone stay frozen; class-balanced sampling. Under ``--recipe kang``
stage 2 follows Kang et al.'s configs per benchmark (``ltbench.spec.recipes.KANG_STAGE2``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods


class ScaledLinear(nn.Module):
    """A frozen linear layer with a learned per-class scale of its outputs."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(linear.out_features, device=linear.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # the effective class rows (their norms are what LWS balances)
        return self.scale[:, None] * self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


@methods.register()
class LWS(ClassifierRetraining):
    name = "lws"
    presentation = Presentation(order=41)
    overrides = ClassifierRetraining.overrides | {"sampler", "weight_decay"}  # set on purpose
    description = "learnable per-class logit scale on the frozen classifier (Kang et al. 2020)"

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        # the base's values come last: under --recipe kang they include Kang et al.'s sampler and weight decay
        return {"sampler": "class_balanced", "weight_decay": 5e-4, **super().hparams(stage, recipe, family)}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        if not isinstance(model.classifier, ScaledLinear):
            model.classifier = ScaledLinear(model.classifier)
