"""LIFT (Shi et al., ICML 2024, "Long-Tail Learning with Foundation Model: Heavy Fine-Tuning Hurts";
shijxcs/LIFT): lightweight fine-tuning of a foundation model in one stage.

As their configs/model/clip_vit_b16.yaml and trainer.py (written anew here, checked against hand
computations in tests/test_lift.py):
- backbone CLIP ViT-B/16 with AdaptFormer modules (``tuning=adaptformer``, bottleneck width by their rule);
  the modules and the head train, nothing else (ltbench.models.peft);
- a cosine classifier s cos(x, w_k), s = 25 (``scale``), initialised from CLIP's text features of the class
  names (``init_head``: their ``text_feat``; ``class_mean`` as their ImageNet-21k ViT configs; ``random``);
  prompts "a photo of a {}." (``prompt=default``; ``ensemble``: CLIP's 80 ImageNet templates);
- the logit-adjusted loss CE(z + tau log prior), tau 1 (their ``LA``: prior = counts / total);
- the protocol of the recipe ``lift`` (ltbench.spec.recipes): SGD 0.9, lr 0.01, WD 5e-4 on every trained
  parameter, batch 128, 10 epochs (20 on iNaturalist), cosine per epoch, the last epoch reported;
- test-time ensembling as an option (``tte``: the mean of the logits of five (or ten) crops of each whole image
  resized to the input size + ``tte_expand``, as their test loader makes them: ltbench.data.resolution's
  ``with_tte_crops``, ltbench.models.tte), for the final report and `ltbench eval`.

It reads the benchmark's class names only for the text features (``needs_class_names``): init_head=text, or auto
on a backbone with a text tower.
"""

from __future__ import annotations

from typing import Any

import torch

from ltbench.data.resolution import CROPS, with_tte_crops
from ltbench.data.splits import TrainSplits
from ltbench.errors import LtbenchError
from ltbench.method import Presentation, StageContext
from ltbench.models.text_head import (
    LIFT_SCALE,
    PROMPTS,
    CosineClassifier,
    class_means,
    head_weights,
    text_embeddings,
)
from ltbench.models.tte import CropEnsemble
from ltbench.registry import backbones, methods
from ltbench.spec.run_spec import RunSpec
from ltbench.spec.schema import Setting

from .logit_adjust import TAU, LogitAdjusted

INITS = ("auto", "text", "class_mean", "random")
PROMPT = Setting("prompt", "default", "class-name prompts of the text features: default ('a photo of a {}.') | "
                 "ensemble (CLIP's 80 ImageNet templates, averaged) | classname", "head", choices=PROMPTS)
TTE = Setting("tte", False, "test-time ensembling: report the mean logits of crops of each evaluation image (LIFT's "
              "tte)", "evaluation")
TTE_EXPAND = Setting("tte_expand", 24, "test-time ensembling: images resized to the input size + this many pixels "
                     "before cropping (LIFT: 24 on ViT-B/16, 21 on ViT-L/14)", "evaluation", low=0, high=4096,
                     read_under=("tte", (True,)))
TTE_CROPS = Setting("tte_crops", "five", "test-time ensembling: five (corners and centre) | ten (and their mirror "
                    "images)", "evaluation", choices=CROPS, read_under=("tte", (True,)))


def tte_model(model: torch.nn.Module, hp: Any) -> torch.nn.Module:
    """``model`` with test-time ensembling where the stage's settings ask for it."""
    return CropEnsemble(model, hp["tte_expand"], hp["tte_crops"]) if hp.get("tte") else model


def tte_splits(splits: TrainSplits, hp: Any) -> TrainSplits:
    """The splits the ensemble reads where the stage's settings ask for it: the crops of each whole image."""
    return with_tte_crops(splits, hp["tte_expand"], hp["tte_crops"]) if hp.get("tte") else splits


def tte_record(hp: Any) -> dict[str, Any]:
    return {"tte": {"crops": hp["tte_crops"], "expand": hp["tte_expand"]}} if hp.get("tte") else {}


def has_text_tower(backbone: str) -> bool:
    """Whether the registered ``backbone`` is a CLIP model (open_clip: image and text towers)."""
    return getattr(backbones.get(backbone), "library", None) == "open_clip"


@methods.register()
class LIFT(LogitAdjusted):
    name = "lift"
    description = "LIFT (Shi et al. 2024): AdaptFormer on CLIP, cosine head from text features, logit-adjusted loss"
    default_recipe = "lift"
    presentation = Presentation(order=73, in_default_run=False, in_all=False)
    overrides = frozenset({"tuning"})  # set on purpose: AdaptFormer
    search_space = ("train.lr=log:1e-3..0.1", "train.weight_decay=log:1e-5..1e-2")
    settings = (TAU,
                Setting("scale", LIFT_SCALE, "the cosine classifier's logit scale s (LIFT: 25)", "head", low=0,
                        low_open=True),
                Setting("init_head", "auto", "the head's initial rows: text (CLIP's text features) | class_mean (mean "
                        "training feature per class) | random | auto (text on a CLIP backbone, else class_mean)",
                        "head", choices=INITS),
                PROMPT, TTE, TTE_EXPAND, TTE_CROPS)

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"tuning": "adaptformer", "tau": 1.0, "scale": LIFT_SCALE, "init_head": "auto", "prompt": "default",
                "tte": False, "tte_expand": 24, "tte_crops": "five"}

    def needs_class_names(self, spec: RunSpec) -> bool:
        """Only a head initialised from text features reads the class names: init_head=text, or auto on a
        backbone with a text tower (``head_init``'s choice)."""
        init = spec.stages["train"]["init_head"]
        return init == "text" or (init == "auto" and has_text_tower(spec.backbone))

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        super().prepare(model, ctx)  # the log prior of the loss
        head = CosineClassifier(model.feature_dim, ctx.num_classes, ctx.hp["scale"]).to(ctx.device)
        model.classifier = head
        if ctx.restoring:  # `ltbench eval`: the weights come from model.pt
            return
        init = self.head_init(model, ctx.hp)
        if init == "text":
            with torch.no_grad():
                head.weight.copy_(head_weights(model, text_embeddings(model, self.names(ctx), ctx.hp["prompt"],
                                                                      ctx.device)))
        elif init == "class_mean":
            with torch.no_grad():
                head.weight.copy_(class_means(model.features, ctx.splits, ctx.num_classes, ctx.device))
        ctx.record["head_init"] = init + (f" (prompt {ctx.hp['prompt']})" if init == "text" else "")

    @staticmethod
    def head_init(model: torch.nn.Module, hp: Any) -> str:
        """``init_head`` with auto resolved: text on a backbone with a text tower, class_mean otherwise."""
        init = hp["init_head"]
        clip = getattr(model, "clip", None) is not None
        if init == "auto":
            return "text" if clip else "class_mean"
        if init == "text" and not clip:
            raise LtbenchError("lift: init_head=text needs a CLIP backbone (one with a text tower: clip_vit_b16, "
                               "clip_vit_l14, clip_rn50); use --set train.init_head=class_mean (LIFT's choice for "
                               "ImageNet-21k ViTs) or auto.")
        return init

    @staticmethod
    def names(ctx: StageContext) -> list[str]:
        if ctx.class_names is None:
            raise LtbenchError("lift: the benchmark gives no class names for CLIP's text features; use --set "
                               "train.init_head=class_mean, or provide the benchmark's names file.")
        return ctx.class_names

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        ctx.record.update(tte_record(ctx.hp))

    def report_model(self, model: torch.nn.Module, ctx: StageContext) -> torch.nn.Module:
        return tte_model(model, ctx.hp)

    def report_splits(self, splits: TrainSplits, ctx: StageContext) -> TrainSplits:
        return tte_splits(splits, ctx.hp)
