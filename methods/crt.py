"""cRT (Kang et al. 2020): classifier re-training. The stage-1 backbone is frozen, the linear
classifier re-initialised and trained with class-balanced sampling."""

from __future__ import annotations

from typing import Any

import torch

from ltbench.method import ClassifierRetraining, StageContext
from ltbench.registry import methods


@methods.register()
class CRT(ClassifierRetraining):
    name = "crt"
    overrides = ClassifierRetraining.overrides | {"sampler", "weight_decay"}  # set on purpose
    description = "classifier re-training with class-balanced sampling (Kang et al. 2020)"

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {**super().hparams(stage, recipe, family), "sampler": "class_balanced", "weight_decay": 5e-4}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        model.classifier.reset_parameters()
