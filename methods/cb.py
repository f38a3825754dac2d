"""Class-balanced loss (Cui et al. 2019): per-class weights from the effective number of samples.

w_j = (1 - beta) / (1 - beta^n_j), rescaled to sum to C; a sample's loss is weighted by w_y. One
implementation serves the one-stage ``cb`` method (CE + CB) and weight balancing's stage 2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltbench.engine.stage_options import class_balanced_weights
from ltbench.method import Method, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

# The settings of the class-balanced loss, declared once: cb, cb_focal, wb's stage 2 and the DRW of
# ldam_drw and ride take them.
BETA = Setting("beta", 0.9999, "Cui et al.'s beta of the class weights (1 - beta) / (1 - beta^n_j)", "loss",
               low=0, high=1, high_open=True)
CB_FORM = Setting("cb_form", "softmax", "softmax: weighted softmax CE (Cui et al., the WB paper) | softmax_bce: "
                  "weighted BCE of the softmax (the WB code)", "loss", choices=("softmax", "softmax_bce"))


def cb_weights(counts: list[int], beta: float) -> torch.Tensor:
    """Class-balanced weights, summing to the number of classes (classes with no images get 0): the
    engine's ``ltbench.engine.stage_options.class_balanced_weights`` (its ``reweight=cb`` option), one implementation."""
    return class_balanced_weights(counts, beta)


def cb_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, form: str = "softmax") -> torch.Tensor:
    """The CB loss in one of two forms.

    "softmax": weighted softmax cross-entropy, sum_i w_{y_i} CE_i / batch (Cui et al., the WB paper).
    "softmax_bce": the WB authors' code: binary cross-entropy between the softmax probabilities and
    the one-hot targets, each row weighted by w_y, averaged over batch x classes.
    """
    w = weights[targets]  # weights live on the logits' device (the method moves them once)
    if form == "softmax":
        return (F.cross_entropy(logits, targets, reduction="none") * w).mean()
    if form == "softmax_bce":
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(targets, logits.shape[1]).float()
        return F.binary_cross_entropy(probs, onehot, weight=w[:, None].expand_as(probs))
    raise ValueError(f"unknown CB loss form {form!r}")


@methods.register()
class CB(Method):
    name = "cb"
    presentation = Presentation(order=10)
    description = "CE with class-balanced loss weights (Cui et al. 2019), one stage"
    settings = (BETA, CB_FORM)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"beta": 0.9999, "cb_form": "softmax"}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        ctx.state["cb_weights"] = cb_weights(ctx.class_counts, ctx.hp["beta"]).to(ctx.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return cb_loss(logits, targets, ctx.state["cb_weights"], ctx.hp["cb_form"])
