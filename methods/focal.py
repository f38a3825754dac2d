"""Focal loss (Lin et al. 2017) and class-balanced focal loss (Cui et al. 2019), one stage each.

``focal``: the softmax focal loss of the long-tail literature, -(1 - p_y)^gamma log p_y averaged
over the batch (p = softmax(z)); gamma 1.0 as in Cao et al. 2019's code (LDAM-DRW, cifar_train.py:
``FocalLoss(gamma=1)``) and Cui et al. 2019's focal baseline on long-tailed CIFAR. gamma 0 is CE.

``cb_focal``: Cui et al.'s class-balanced focal loss in the sigmoid form of their code
(richardaecn/class-balanced-loss, src/cifar_main.py ``focal_loss``): every class is a binary problem,
    L = 1/N sum_i w_{y_i} sum_j (1 - p_t,ij)^gamma BCE(z_ij, t_ij),
with t the one-hot target, p_t = sigmoid(z) where t = 1 and 1 - sigmoid(z) where t = 0, and w the
class-balanced weights (1 - beta) / (1 - beta^n), rescaled to sum to C (``cb_weights``); the sum is
normalised by the number of positives (N). As in their code, the classifier's bias starts at
-log(C - 1) (every class's sigmoid near 1/C) and takes no weight decay.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ltbench.method import Method, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

from .cb import BETA, cb_weights

FOCAL_GAMMA = Setting("focal_gamma", 1.0, "the focusing exponent: (1 - p)^gamma down-weights well-classified "
                      "images (0: no focusing)", "loss", low=0)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Softmax focal loss: mean over the batch of -(1 - p_y)^gamma log p_y."""
    logp = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    if gamma == 0:
        return -logp.mean()
    modulator = (-torch.expm1(logp)).clamp_min(1e-12).pow(gamma)  # 1 - p_y, kept off 0 for gamma < 1
    return -(modulator * logp).mean()


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """Cui et al.'s sigmoid focal loss, each row weighted by w_y, summed and divided by the batch size.
    With s = z for the target class and -z for the others: p_t = sigmoid(s), BCE = softplus(-s) and
    (1 - p_t)^gamma = exp(-gamma softplus(s)) (stable for any z)."""
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    s = logits * (2 * onehot - 1)
    loss = F.softplus(-s) * torch.exp(-gamma * F.softplus(s)) if gamma else F.softplus(-s)
    return (loss * weights[targets][:, None]).sum() / len(targets)


@methods.register()
class Focal(Method):
    name = "focal"
    presentation = Presentation(order=11, in_default_run=False)
    description = "softmax focal loss -(1-p_y)^gamma log p_y, gamma 1 (Lin et al. 2017; Cao et al.'s baseline)"
    settings = (FOCAL_GAMMA,)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"focal_gamma": 1.0}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return focal_loss(logits, targets, ctx.hp["focal_gamma"])


@methods.register()
class CBFocal(Method):
    name = "cb_focal"
    presentation = Presentation(order=12, in_default_run=False)
    description = "class-balanced sigmoid focal loss, beta 0.9999, gamma 1 (Cui et al. 2019)"
    settings = (BETA, FOCAL_GAMMA)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"beta": 0.9999, "focal_gamma": 1.0}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        ctx.state["cb_weights"] = cb_weights(ctx.class_counts, ctx.hp["beta"]).to(ctx.device)
        with torch.no_grad():  # Cui et al.: sigmoid outputs start near 1/C (a resumed run loads its own)
            model.classifier.bias.fill_(-math.log(max(ctx.num_classes - 1, 1)))

    def param_groups(self, model: torch.nn.Module, ctx: StageContext) -> list[dict[str, Any]]:
        bias = model.classifier.bias
        rest = [p for p in model.parameters() if p.requires_grad and p is not bias]
        return [{"params": rest, "weight_decay": ctx.hp["weight_decay"]}, {"params": [bias], "weight_decay": 0.0}]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, ctx.state["cb_weights"], ctx.hp["focal_gamma"])
