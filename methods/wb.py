"""Weight balancing (Alshammari et al., CVPR 2022).

Stage 1: the shared ``ce`` run with the tuned weight decay on every parameter.
Stage 2: backbone frozen; the last layer (weight and bias) is retrained with the class-balanced loss,
weight decay and the MaxNorm constraint: after every optimizer step (paper) or once per epoch
(authors' code, ``--recipe official``), each class row is projected onto the ball of radius
delta = min_k ||w_k|| + t (max_k ||w_k|| - min_k ||w_k||), taken from the stage-1 classifier; the
bias is free. The projection is the engine's (the stage options maxnorm, threshold, maxnorm_every:
ltbench.engine.stage_options), which WB switches on. The rows of the paper's Table 1 are hyperparameters:
stage2.loss=ce|cb, stage2.weight_decay=0|0.1, stage2.maxnorm=true|false.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltbench.engine.stage_options import maxnorm_, maxnorm_radius
from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods
from ltbench.results.reference import STAGE1
from ltbench.spec.schema import Setting

from .cb import BETA, CB_FORM, cb_loss, cb_weights

__all__ = ["WB", "maxnorm_", "maxnorm_radius"]  # the projection lives in ltbench.engine.stage_options (the engine's)


@methods.register()
class WB(ClassifierRetraining):
    name = "wb"
    presentation = Presentation(order=60, stage1_row=(STAGE1, 1))
    overrides = ClassifierRetraining.overrides | {"weight_decay", "select",  # set on purpose
                                                  "maxnorm", "threshold", "maxnorm_every"}
    description = "weight balancing: tuned-WD CE, then CB loss + WD + MaxNorm on the classifier"
    # `ltbench tune`: the two weight decays (the authors found the first by Bayesian optimisation)
    search_space = ("stage1.weight_decay=log:1e-4..1e-1", "stage2.weight_decay=log:1e-3..1")
    # threshold and maxnorm_every are the engine's (its MaxNorm group), declared and checked there
    settings = (Setting("loss", "cb", "stage 2's loss: class-balanced (cb, beta and cb_form) or plain CE", "loss",
                        choices=("ce", "cb")), BETA, CB_FORM)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        official = recipe == "official"
        return {**super().hparams(stage, recipe, family), "weight_decay": 0.1, "loss": "cb", "beta": 0.9999,
                "cb_form": "softmax_bce" if official else "softmax", "maxnorm": True, "threshold": 0.1,
                "maxnorm_every": "epoch" if official else "step", **({"select": "test"} if official else {})}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        hp = ctx.hp
        weights = cb_weights(ctx.class_counts, hp["beta"]) if hp["loss"] == "cb" else torch.ones(ctx.num_classes)
        ctx.state["class_weights"] = weights.to(ctx.device)
        ctx.record["stage1_classifier_norms"] = model.classifier.weight.detach().float().norm(dim=1).tolist()

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        if ctx.options is not None:  # the radius the engine projected onto (computed once, as the stage started)
            ctx.record["maxnorm_radius"] = ctx.options.radius

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        if ctx.hp["loss"] == "ce":
            return F.cross_entropy(logits, targets)
        return cb_loss(logits, targets, ctx.state["class_weights"], ctx.hp["cb_form"])
