"""DisAlign (Zhang et al., CVPR 2021, "Distribution Alignment: A Unified Framework for Long-tail
Visual Recognition"): stage 2 calibrates the frozen classifier's logits z = W f + b.

Adaptive calibration function, as in the authors' code (cvpods ``DisAlignLinear``, used by
Megvii-BaseDetection/DisAlign's ImageNet-LT config):
    z'_j = (1 + sigma(x) a_j) z_j + sigma(x) b_j,   sigma(x) = sigmoid(v . f + c),
a per-class scale a (init 1) and bias b (init 0), and an input-dependent confidence sigma(x) from a
linear layer on the features (v init 0.1 everywhere, c torch's default init). The paper writes the
same as sigma(x) (alpha_j z_j + beta_j) + (1 - sigma(x)) z_j. Only a, b, v, c train; the backbone and
W, b stay frozen. The calibration sits in the model's classifier, so the final evaluation, cached-
feature training and the saved model.pt all include it.

Generalized re-weighting (GRW, their ``GRWCrossEntropyLoss``): w_c = (1 / r_c)^rho with r_c = n_c / N,
rescaled to sum to C; the loss is torch's weighted cross-entropy, sum_i w_{y_i} CE_i / sum_i w_{y_i}.
rho = 1.2 (``GRW_SCALE`` of their ImageNet-LT config, the only public classification config).
Stage 2 (that config): 10 epochs, SGD lr 0.1 at batch 256, weight decay 5e-4, cosine, no warm-up,
instance-balanced sampling. Their input is augmented images through the backbone in train mode
(``--recipe kang``/``official`` here); ``--recipe paper`` trains on cached features.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting


class CalibratedLinear(nn.Module):
    """A frozen linear classifier followed by DisAlign's adaptive calibration of its logits."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        device = linear.weight.device
        self.linear = linear.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.ones(linear.out_features, device=device))
        self.logit_bias = nn.Parameter(torch.zeros(linear.out_features, device=device))
        self.confidence = nn.Linear(linear.in_features, 1, device=device)
        nn.init.constant_(self.confidence.weight, 0.1)

    @property
    def weight(self) -> torch.Tensor:
        """The class rows at full confidence (sigma = 1), (1 + a_j) w_j: what the table's norms show."""
        return (1 + self.logit_scale)[:, None] * self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        conf = torch.sigmoid(self.confidence(x))  # (N, 1)
        return (1 + conf * self.logit_scale) * z + conf * self.logit_bias


def grw_weights(counts: list[int], rho: float) -> torch.Tensor:
    """Generalized re-weighting: (1 / r_c)^rho with r_c = n_c / sum n, rescaled to sum to C (a class
    without images gets 0)."""
    n = torch.tensor(counts, dtype=torch.float64)
    r = n / n.sum()
    w = torch.where(n > 0, r.clamp_min(1e-300).pow(-rho), torch.zeros_like(r))
    return (w * len(counts) / w.sum()).float()


def grw_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy, normalised by the batch's total weight (torch's ``weight=`` mean)."""
    return F.cross_entropy(logits, targets, weight=weights)


@methods.register()
class DisAlign(ClassifierRetraining):
    name = "disalign"
    presentation = Presentation(order=44, in_default_run=False)
    overrides = ClassifierRetraining.overrides | {"weight_decay"}  # set on purpose
    description = "adaptive logit calibration on the frozen classifier, GRW loss (Zhang et al. 2021)"
    settings = (Setting("rho", 1.2, "GRW's exponent: class weights (N / n_c)^rho (0: plain CE)", "loss", low=0),)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        augmented = recipe in ("kang", "official")  # the authors' input: augmented images, BatchNorm in train mode
        batch = 64 if family == "digits" else 256  # digits-LT (335 images): the digits recipe's batch
        return {"epochs": 10, "lr": 0.1, "batch_size": batch, "weight_decay": 5e-4, "schedule": "cosine",
                "warmup_epochs": 0, "augment": augmented, "frozen_bn": "train" if augmented else "eval",
                "rho": 1.2}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        if not isinstance(model.classifier, CalibratedLinear):
            model.classifier = CalibratedLinear(model.classifier)
        ctx.state["grw_weights"] = grw_weights(ctx.class_counts, ctx.hp["rho"]).to(ctx.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return grw_loss(logits, targets, ctx.state["grw_weights"])
