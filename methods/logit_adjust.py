"""Logit adjustment (Menon et al. 2021) and balanced softmax (Ren et al. 2020).

Train-time form (``logit_adj``, ``balanced_softmax`` = tau 1): the loss sees z_j + tau log pi_j,
predictions use z. Post-hoc form (``logit_adj_posthoc``, on the shared stage-1 backbone): predict
argmax_j z_j - tau log pi_j, folded into the classifier bias. pi is the training class prior.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltbench.method import ClassifierRetraining, Method, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

# Menon et al.'s tau scales the log prior; 0 is plain CE (train time) or the model as it is (post hoc), and a
# negative tau would adjust towards the head classes.
TAU = Setting("tau", 1.0, "the loss sees z + tau log(prior) (balanced softmax: 1; 0: plain CE)", "loss", low=0)


def log_prior(counts: list[int]) -> torch.Tensor:
    """log of the training class prior; a class with no training images counts as one (finite log)."""
    n = torch.tensor(counts, dtype=torch.float32).clamp_min(1)
    return (n / n.sum()).log()


@methods.register()
class LogitAdjusted(Method):
    name = "logit_adj"
    presentation = Presentation(order=30)
    description = "logit-adjusted loss, CE on z + tau log(prior) (Menon et al. 2021)"
    settings = (TAU,)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"tau": 1.0}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        ctx.state["log_prior"] = log_prior(ctx.class_counts).to(ctx.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return F.cross_entropy(logits + ctx.hp["tau"] * ctx.state["log_prior"], targets)


@methods.register()
class BalancedSoftmax(LogitAdjusted):
    name = "balanced_softmax"
    presentation = Presentation(order=31)
    description = "balanced softmax: logit-adjusted loss with tau = 1 (Ren et al. 2020)"


@methods.register()
class LogitAdjustedPosthoc(ClassifierRetraining):
    name = "logit_adj_posthoc"
    presentation = Presentation(order=52)
    description = "post-hoc logit adjustment of the stage-1 model: z - tau log(prior)"
    stages = ("posthoc",)
    search_space = ("stage1.weight_decay=log:1e-5..1e-1", "posthoc.tau=0..2")
    settings = (Setting("tau", 1.0, "predict argmax z - tau log(prior) (0: the stage-1 model as it is)", "post-hoc",
                        low=0),)

    def trains(self, stage: str) -> bool:
        return False

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"tau": 1.0}

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        with torch.no_grad():
            model.classifier.bias.sub_(ctx.hp["tau"] * log_prior(ctx.class_counts).to(model.classifier.bias.device))
