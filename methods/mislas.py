"""MiSLAS (Zhong et al., CVPR 2021, "Improving Calibration for Long-Tailed Recognition"; code
dvlab-research/MiSLAS, train_stage1.py, train_stage2.py, methods.py, config/*).

Stage 1: a ``ce`` run of its own with mixup (the engine's ``mix=mixup``, Beta(alpha, alpha): alpha 1.0
on CIFAR and digits, 0.2 on ImageNet-LT, iNaturalist 2018 and Places-LT, as their configs say).

Stage 2: the backbone frozen, its BatchNorm in train mode on augmented images ("shift learning on
BatchNorm": the running statistics are re-estimated on class-balanced data; ``frozen_bn=train``), the
stage-1 classifier fine-tuned at ``lr_factor`` x lr together with a learned per-class logit scale
(their ``LearnableWeightScaling``, init 1) at lr, class-aware sampling, 10 epochs, and label-aware
smoothing: class y's smoothing is eps_y between ``smooth_tail`` (eps_K, the rarest class, n_K) and
``smooth_head`` (eps_1, the most frequent, n_1), with u = (n_y - n_K) / (n_1 - n_K):
    concave: eps_K + (eps_1 - eps_K) sin(pi u / 2)        (their default)
    linear:  eps_K + (eps_1 - eps_K) u
    convex:  eps_1 + (eps_1 - eps_K) sin(3 pi / 2 + pi u / 2)
and the loss is mean_i [(1 - eps_{y_i}) (-log p_{y_i}) + eps_{y_i} mean_k (-log p_k)].
Defaults are their CIFAR-100-LT IR100 config (smooth 0.4 / 0.1, lr_factor 0.2, batch 128, WD 2e-4);
the large benchmarks take theirs (0.3 / 0.0 on ImageNet-LT and iNaturalist, 0.4 / 0.1 on Places-LT,
lr_factor 0.05, batch 256, WD 5e-4 / 1e-4 / 5e-4).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

from .lws import ScaledLinear

SHAPES = ("concave", "linear", "convex")

# benchmark family -> stage 2 values of their configs (CIFAR: cifar100_imb001_stage2_mislas.yaml)
STAGE2: dict[str, dict[str, Any]] = {
    "cifar": {"batch_size": 128, "weight_decay": 2e-4, "smooth_head": 0.4, "smooth_tail": 0.1, "lr_factor": 0.2},
    "imagenet_lt": {"batch_size": 256, "weight_decay": 5e-4, "smooth_head": 0.3, "smooth_tail": 0.0,
                    "lr_factor": 0.05},
    "inat2018": {"batch_size": 256, "weight_decay": 1e-4, "smooth_head": 0.3, "smooth_tail": 0.0, "lr_factor": 0.05},
    "places_lt": {"batch_size": 256, "weight_decay": 5e-4, "smooth_head": 0.4, "smooth_tail": 0.1, "lr_factor": 0.05},
}
MIXUP_ALPHA = {"imagenet_lt": 0.2, "inat2018": 0.2, "places_lt": 0.2}  # other families: 1.0 (their CIFAR)

# Their six CIFAR stage-2 configs (config/cifar100/cifar100_imb{001,002,01}_stage2_mislas.yaml and
# config/cifar10/cifar10_imb{001,002,01}_stage2_mislas.yaml), by benchmark and imbalance ratio. hparams()
# sees the benchmark family only, so the defaults are the CIFAR-100-LT IR100 row (STAGE2["cifar"]); the
# others differ in smoothing, lr_factor and shift_bn (False on CIFAR-10: the backbone's BatchNorm in eval
# mode, frozen_bn=eval). ``data_hparams`` gives a run's row, which resolve applies over hparams().
CIFAR_CONFIGS: dict[tuple[str, float], dict[str, Any]] = {
    ("cifar100_lt", 100.0): {"smooth_head": 0.4, "smooth_tail": 0.1, "lr_factor": 0.2, "frozen_bn": "train"},
    ("cifar100_lt", 50.0): {"smooth_head": 0.3, "smooth_tail": 0.0, "lr_factor": 0.1, "frozen_bn": "train"},
    ("cifar100_lt", 10.0): {"smooth_head": 0.2, "smooth_tail": 0.0, "lr_factor": 0.1, "frozen_bn": "train"},
    ("cifar10_lt", 100.0): {"smooth_head": 0.3, "smooth_tail": 0.0, "lr_factor": 0.5, "frozen_bn": "eval"},
    ("cifar10_lt", 50.0): {"smooth_head": 0.2, "smooth_tail": 0.0, "lr_factor": 0.2, "frozen_bn": "eval"},
    ("cifar10_lt", 10.0): {"smooth_head": 0.1, "smooth_tail": 0.0, "lr_factor": 0.2, "frozen_bn": "eval"},
}


def label_aware_eps(counts: list[int], head: float, tail: float, shape: str = "concave") -> torch.Tensor:
    """Per-class smoothing eps_y from the class counts (see the module docstring); with all counts
    equal every class gets ``head``."""
    n = torch.tensor(counts, dtype=torch.float64)
    span = float(n.max() - n.min())
    u = (n - n.min()) / span if span > 0 else torch.ones_like(n)
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(u * math.pi / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * u
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + u * math.pi / 2)
    else:
        raise ValueError(f"unknown smoothing shape {shape!r}")
    return eps.float()


def label_aware_smoothing_loss(logits: torch.Tensor, targets: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """mean_i [(1 - eps_y) NLL_i + eps_y mean_k (-log p_k)] with eps_y = eps[y_i]."""
    logp = F.log_softmax(logits, dim=1)
    e = eps[targets]
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    return ((1 - e) * nll - e * logp.mean(dim=1)).mean()


@methods.register()
class MiSLAS(ClassifierRetraining):
    name = "mislas"
    presentation = Presentation(order=43, stage1_row=("mislas stage 1 (ce + mixup)", 42.5), in_default_run=False)
    overrides = ClassifierRetraining.overrides | {"sampler", "weight_decay"}  # set on purpose
    description = "mixup stage 1; classifier + scale with label-aware smoothing, BN shift (Zhong et al. 2021)"
    settings = (
        Setting("smooth_shape", "concave", "how the label-aware smoothing goes from the rarest class to the most "
                "frequent", "loss", choices=SHAPES),
        Setting("smooth_head", 0.4, "label smoothing eps_1 of the most frequent class", "loss", low=0, high=1,
                high_open=True),
        Setting("smooth_tail", 0.1, "label smoothing eps_K of the rarest class", "loss", low=0, high=1,
                high_open=True),
        Setting("lr_factor", 0.2, "the classifier's lr is lr_factor x lr (the logit scale's is lr)", "optimisation",
                low=0, low_open=True),
    )

    def stage1_hparams(self, recipe: str, family: str) -> dict[str, Any]:
        return {"mix": "mixup", "mix_alpha": MIXUP_ALPHA.get(family, 1.0)}

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"epochs": 10, "lr": 0.1, "schedule": "cosine", "warmup_epochs": 0, "sampler": "class_aware",
                "augment": True, "frozen_bn": "train", "smooth_shape": "concave",
                **STAGE2.get(family, STAGE2["cifar"]), **({"batch_size": 64} if family == "digits" else {})}

    def data_hparams(self, stage: str, recipe: str, benchmark: str, data: dict[str, Any]) -> dict[str, Any]:
        """Their stage-2 config for this benchmark and imbalance ratio (CIFAR_CONFIGS), where one exists;
        empty otherwise (the family's defaults are theirs); resolve applies it over hparams(), before --set."""
        imbalance = data.get("imbalance")
        return dict(CIFAR_CONFIGS.get((benchmark, float(imbalance)), {})) if imbalance is not None else {}

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)
        if not isinstance(model.classifier, ScaledLinear):
            model.classifier = ScaledLinear(model.classifier)
        model.classifier.linear.requires_grad_(True)  # fine-tuned, unlike LWS's
        hp = ctx.hp
        eps = label_aware_eps(ctx.class_counts, hp["smooth_head"], hp["smooth_tail"], hp["smooth_shape"])
        ctx.state["smoothing"] = eps.to(ctx.device)
        ctx.record["label_aware_eps"] = eps.tolist()

    def param_groups(self, model: torch.nn.Module, ctx: StageContext) -> list[dict[str, Any]]:
        hp = ctx.hp
        return [{"params": list(model.classifier.linear.parameters()), "weight_decay": hp["weight_decay"],
                 "lr": hp["lr"] * hp["lr_factor"]},
                {"params": [model.classifier.scale], "weight_decay": hp["weight_decay"]}]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return label_aware_smoothing_loss(logits, targets, ctx.state["smoothing"])
