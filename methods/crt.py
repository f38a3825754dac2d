"""cRT (Kang et al. 2020): classifier re-training. The stage-1 backbone is frozen, the linear
classifier re-initialised and trained with class-balanced sampling. Under ``--recipe kang`` stage 2
follows Kang et al.'s configs per benchmark (``ltbench.spec.recipes.KANG_STAGE2``): their class-aware
sampler, lr 0.2 per batch of 512, augmented images through the backbone in train mode."""

from __future__ import annotations

from typing import Any

import torch

from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods


@methods.register()
class CRT(ClassifierRetraining):
    name = "crt"
    presentation = Presentation(order=40)
    overrides = ClassifierRetraining.overrides | {"sampler", "weight_decay"}  # set on purpose
    description = "classifier re-training with class-balanced sampling (Kang et al. 2020)"

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        # the base's values come last: under --recipe kang they include Kang et al.'s sampler and weight decay
        return {"sampler": "class_balanced", "weight_decay": 5e-4, **super().hparams(stage, recipe, family)}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        model.classifier.reset_parameters()
