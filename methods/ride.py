"""RIDE (Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR
2021), its training loss as in the authors' code (frank-xwang/RIDE-LongTailRecognition: model/loss.py
``RIDELoss``, configs/config_*_ride.json), WITHOUT the expert-assignment router (their optional
second stage, ``*_ride_ea.json``) and without distillation: every expert runs on every image and the
prediction is the mean of the experts' logits (the routed model of their tables uses fewer experts
per image at a small cost in accuracy).

Expert k's logits z_k = s cos(f_k, w_k) (s 30, ltbench.models.experts); zbar = mean_k z_k. With LDAM margins
m_c = max_m * n_c^(-1/4) / max_c n_c^(-1/4) and, from ``drw_start`` of the epochs (DRW), the
class-balanced weights w_c (beta 0.9999, summing to C), the loss of a batch is

    sum_k [ CE_w(z_k - s m_y 1_y, y) + lambda_div * T^2 * KL(softmax(zbar / T) || softmax(z_k / T)) ]

CE_w: cross-entropy weighted by w (a weighted mean over the batch; unweighted before DRW). KL per
image, averaged over the batch (``batchmean``), the target softmax(zbar / T) held constant (no
gradient). T = ``diversity_temperature`` (1) before DRW; from DRW on, a per-class temperature
T_c = T * v_c with v_c = (C pi_c r + 1 - r) / max_c (C pi_c r + 1 - r) (r the ``reweight_factor``,
pi the training prior), and the factor T^2 becomes mean_c(T_c)^2. lambda_div < 0 (-0.45 on
CIFAR-100, -0.2 on ImageNet-LT and iNaturalist) rewards experts that disagree with the ensemble.
As in their code, with lambda_div = 0 the CE terms are taken of zbar instead of z_k.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltbench.method import Method, Presentation, StageContext
from ltbench.models.experts import MULTI_EXPERT_VARIANT
from ltbench.registry import methods
from ltbench.spec.schema import Setting

from .cb import BETA, cb_weights
from .ldam_drw import DRW_START, MAX_M, ldam_margins
from .sade import check_multi_expert, multi_expert_problems

# Their configs (config_imbalance_cifar100_ride.json, config_imagenet_lt_resnext50_ride.json,
# config_iNaturalist_resnet50_ride.json) under the default recipe; CustomLR: 5 warm-up epochs, then
# x gamma at step1 and again at step2.
RIDE_PROTOCOL: dict[str, dict[str, Any]] = {
    "cifar": {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "nesterov": True,
              "schedule": "step", "milestones": [0.8, 0.9], "gamma": 0.01, "warmup_epochs": 5},
    "imagenet_lt": {"epochs": 100, "batch_size": 256, "lr": 0.1, "weight_decay": 2e-4, "nesterov": True,
                    "schedule": "step", "milestones": [0.6, 0.8], "gamma": 0.1, "warmup_epochs": 5},
    "inat2018": {"epochs": 100, "batch_size": 512, "lr": 0.2, "weight_decay": 2e-4, "nesterov": True,
                 "schedule": "step", "milestones": [0.6, 0.8], "gamma": 0.1, "warmup_epochs": 5},
}
DIVERSITY_FACTOR = {"imagenet_lt": -0.2, "inat2018": -0.2}  # -0.45 on CIFAR-100 (and digits)
REWEIGHT_FACTOR = {"imagenet_lt": 0.02, "inat2018": 0.015}  # 0.05 on CIFAR-100 (their default)


def diversity_temperature_weights(counts: list[int], r: float) -> torch.Tensor:
    """v_c = (C pi_c r + 1 - r) / max_c (C pi_c r + 1 - r): their per-class diversity temperatures."""
    n = torch.tensor(counts, dtype=torch.float64)
    v = len(counts) * (n / n.sum()) * r + 1 - r
    return (v / v.max()).float()


def ride_loss(z: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, scale: float, factor: float,
              temperature: float | torch.Tensor, ce_weight: torch.Tensor | None) -> torch.Tensor:
    """RIDE's loss of a batch (module docstring): ``z`` (N, K, C) the experts' logits, ``margins`` (C,)
    LDAM margins (times ``scale`` on the logits), ``temperature`` a float or per-class (C,) tensor,
    ``ce_weight`` the DRW class weights or None."""
    mean = z.mean(1)
    t = temperature.view(1, -1) if isinstance(temperature, torch.Tensor) else temperature
    t_mean = float(temperature.mean()) if isinstance(temperature, torch.Tensor) else temperature
    with torch.no_grad():
        target = torch.softmax(mean / t, 1)
    onehot = F.one_hot(y, z.shape[2]).to(z.dtype)
    loss = z.new_zeros(())
    for k in range(z.shape[1]):
        zk = z[:, k] if factor != 0 else mean
        loss = loss + F.cross_entropy(zk - scale * margins[y][:, None] * onehot, y, weight=ce_weight)
        kl = F.kl_div(F.log_softmax(z[:, k] / t, 1), target, reduction="batchmean")
        loss = loss + factor * t_mean * t_mean * kl
    return loss


@methods.register()
class RIDE(Method):
    name = "ride"
    presentation = Presentation(order=71, in_default_run=False)
    description = "three experts, LDAM-DRW + diversity loss, no router (Wang et al. 2021)"
    overrides = frozenset({"epochs", "batch_size", "lr", "weight_decay", "nesterov", "schedule", "milestones",
                           "gamma", "warmup_epochs"})
    settings = (
        MAX_M, DRW_START, BETA,
        Setting("diversity_factor", -0.45, "lambda_div, the weight of the experts' KL to the ensemble (negative: "
                "rewards experts that disagree; 0: CE of the mean logits)", "loss"),
        Setting("diversity_temperature", 1.0, "T of the diversity KL (per class T v_c from DRW on)", "loss", low=0,
                low_open=True),
        Setting("reweight_factor", 0.05, "r of the per-class diversity temperatures v_c (0: the same for every "
                "class)", "loss", low=0, high=1, high_open=True),
    )

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        own: dict[str, Any] = {"max_m": 0.5, "drw_start": 0.8, "beta": 0.9999,
                               "diversity_factor": DIVERSITY_FACTOR.get(family, -0.45),
                               "diversity_temperature": 1.0, "reweight_factor": REWEIGHT_FACTOR.get(family, 0.05)}
        if recipe == "paper":  # the default recipe: their configs where their code covers the benchmark
            own.update(RIDE_PROTOCOL.get(family, {}))
        return own

    def backbone_for(self, name: str) -> str:
        return MULTI_EXPERT_VARIANT.get(name, name)

    def backbone_problems(self, backbone: str) -> list[str]:
        return multi_expert_problems(self.name, backbone)

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        model = check_multi_expert(model, self.name)
        ctx.state["scale"] = float(model.scale)
        ctx.state["margins"] = ldam_margins(ctx.class_counts, ctx.hp["max_m"]).to(ctx.device)
        ctx.state["drw_weights"] = cb_weights(ctx.class_counts, ctx.hp["beta"]).to(ctx.device)
        ctx.state["temperatures"] = (ctx.hp["diversity_temperature"] *
                                     diversity_temperature_weights(ctx.class_counts, ctx.hp["reweight_factor"])
                                     ).to(ctx.device)

    def forward(self, net: torch.nn.Module, x: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return net(x, experts=True)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        hp, st = ctx.hp, ctx.state
        drw = ctx.epoch >= int(round(hp["drw_start"] * hp["epochs"]))
        return ride_loss(logits, targets, st["margins"], st["scale"], hp["diversity_factor"],
                         st["temperatures"] if drw else hp["diversity_temperature"],
                         st["drw_weights"] if drw else None)
