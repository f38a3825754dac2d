"""tau-normalisation (Kang et al. 2020) and L2-normalisation: post-hoc, no training.

w_k <- w_k / ||w_k||^tau, bias dropped (Kang et al.) or kept (``keep_bias``: the WB authors' Normalizer,
``--recipe official``). tau_norm sweeps tau over [tau_min, tau_max] in steps of tau_step and keeps the
best on the validation split (class-mean accuracy); the chosen tau and the whole curve (val, and test
for information) go into the record. l2_norm is tau = 1. Under ``--recipe official`` tau is fixed as
in the WB code: 1.9 for tau_norm (the weight-decay-trained backbone), 1.0 for l2_norm. The default is
also Kang et al.'s (``--recipe kang``): their tau_norm.py tries tau in linspace(0, 2, 21) without the bias.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from ltbench.engine.evaluation import accuracy_report, extract_features
from ltbench.method import ClassifierRetraining, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting


def tau_normalized(weight: torch.Tensor, tau: float) -> torch.Tensor:
    return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)


@methods.register()
class TauNorm(ClassifierRetraining):
    name = "tau_norm"
    presentation = Presentation(order=51)
    description = "post-hoc w/||w||^tau, tau chosen on validation (Kang et al. 2020)"
    stages = ("posthoc",)
    search_space = ("stage1.weight_decay=log:1e-5..1e-1",)  # tau is chosen on validation already
    # select is the engine's (val | test | last); here it names the split that picks tau: val or test (check)
    settings = (
        Setting("tau_min", 0.0, "the smallest tau of the sweep (tau 0: w unchanged; 1: L2-normalised)", "post-hoc",
                low=0),
        Setting("tau_max", 2.0, "the largest tau of the sweep (at least tau_min)", "post-hoc", low=0),
        Setting("tau_step", 0.1, "the step between the taus of the sweep", "post-hoc", low=0, low_open=True),
        Setting("keep_bias", False, "keep the classifier's bias (the WB code's Normalizer) instead of dropping it "
                "(Kang et al.)", "post-hoc", since=False),
    )

    def trains(self, stage: str) -> bool:
        return False

    fixed_tau = 1.9  # the WB code's tau for its weight-decay-trained backbone

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        if recipe == "official":
            return {"tau_min": self.fixed_tau, "tau_max": self.fixed_tau, "tau_step": 0.1, "select": "val",
                    "keep_bias": True}
        return {"tau_min": 0.0, "tau_max": 2.0, "tau_step": 0.1, "select": "val", "keep_bias": False}

    def check(self, stage: str, hp: dict[str, Any]) -> list[str]:
        problems = []
        if hp["tau_min"] > hp["tau_max"]:
            problems.append(f"{stage}.tau_min={hp['tau_min']:g}: must not exceed {stage}.tau_max={hp['tau_max']:g}")
        if hp["select"] == "last":  # the engine's select refuses any other value itself
            problems.append(f"{stage}.select='last': must be val or test (the split that picks tau)")
        return problems

    def taus(self, hp: dict[str, Any]) -> list[float]:
        n = math.floor((hp["tau_max"] - hp["tau_min"]) / hp["tau_step"] + 1e-9)
        return [round(hp["tau_min"] + i * hp["tau_step"], 10) for i in range(n + 1)]

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        feats = ctx.features if ctx.features is not None else extract_features(model.features, ctx.splits, ctx.device)
        w = model.classifier.weight.detach().float()
        bias = model.classifier.bias.detach().float() if ctx.hp.keep_bias else torch.zeros(len(w))
        curve = []
        for tau in self.taus(ctx.hp):
            wt = tau_normalized(w, tau)
            row: dict[str, Any] = {"tau": tau}
            for split in ("val", "test"):
                data = getattr(feats, split)
                logits = data.x @ wt.T + bias.to(data.x.device)
                rep = accuracy_report(logits.cpu(), data.y.cpu(), ctx.class_counts, ctx.splits.shot_rule)
                row[split] = rep["class_mean"]
            curve.append(row)
        key = ctx.hp["select"]
        best = max(curve, key=lambda r: (r[key] if r[key] is not None else -1.0))  # first best: smallest tau
        with torch.no_grad():
            model.classifier.weight.copy_(tau_normalized(w, best["tau"]).to(model.classifier.weight.dtype))
            if not ctx.hp.keep_bias:
                model.classifier.bias.zero_()
        ctx.record.update({"tau": best["tau"], "tau_selected_on": key, "tau_curve": curve})


@methods.register()
class L2Norm(TauNorm):
    name = "l2_norm"
    presentation = Presentation(order=50)
    description = "post-hoc w/||w|| (tau-norm with tau = 1)"

    fixed_tau = 1.0
    settings = tuple(replace(s, default=1.0) if s.key in ("tau_min", "tau_max") else s for s in TauNorm.settings)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {**super().hparams(stage, recipe, family), "tau_min": 1.0, "tau_max": 1.0}
