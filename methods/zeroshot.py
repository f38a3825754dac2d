"""Zero-shot CLIP (Radford et al. 2021), as LIFT reports it (Shi et al., ICML 2024; their ZeroShotCLIP and
configs/model/zsclip_*.yaml): no training; each class is CLIP's text embedding of "a photo of a {}." (or the
80-template ensemble, ``prompt``), and an image's logits are exp(logit_scale) cos(image embedding, text
embedding), the image embedding being the image tower's features through its projection. The classifier
(text embeddings, projection and scale) is the model's, so model.pt holds it; test-time ensembling is an
option as in LIFT (``tte``: the crops of each whole image, ltbench.data.resolution.with_tte_crops). Needs a CLIP
backbone and the benchmark's class names (always: ``needs_class_names``)."""

from __future__ import annotations

from typing import Any

import torch

from ltbench.data.splits import TrainSplits
from ltbench.errors import LtbenchError
from ltbench.method import Method, Presentation, StageContext
from ltbench.models.text_head import CosineClassifier, clip_logit_scale, text_embeddings
from ltbench.registry import methods
from ltbench.spec.run_spec import RunSpec

from .lift import PROMPT, TTE, TTE_CROPS, TTE_EXPAND, has_text_tower, tte_model, tte_record, tte_splits

CLIP_BACKBONES = "clip_vit_b16, clip_vit_l14, clip_rn50 (clip_vit_tiny: the test-size random-init one)"


@methods.register()
class ZeroShot(Method):
    name = "zeroshot"
    description = "zero-shot CLIP: cos(image, text embedding of each class name), no training"
    stages = ("zeroshot",)
    default_recipe = "lift"
    presentation = Presentation(order=72, in_default_run=False, in_all=False)
    search_space = ()
    settings = (PROMPT, TTE, TTE_EXPAND, TTE_CROPS)

    def trains(self, stage: str) -> bool:
        return False

    def needs_class_names(self, spec: RunSpec) -> bool:
        return True  # every class is its name's text embedding

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        return {"prompt": "default", "tte": False, "tte_expand": 24, "tte_crops": "five"}

    def backbone_problems(self, backbone: str) -> list[str]:
        if has_text_tower(backbone):
            return []
        return [f"zeroshot needs a CLIP backbone (image and text towers); {backbone} has no text tower: pass "
                f"--backbone with one of {CLIP_BACKBONES}."]

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        if getattr(model, "clip", None) is None:  # refused before the run (backbone_problems); a plugin's model here
            raise LtbenchError(f"zeroshot needs a CLIP backbone (image and text towers); this model has no text tower: "
                               f"pass --backbone with one of {CLIP_BACKBONES}.")
        projection = model.image_projection
        scale = clip_logit_scale(model)
        dim = model.feature_dim if projection is None else projection.shape[1]
        model.classifier = CosineClassifier(model.feature_dim, ctx.num_classes, scale, projection).to(ctx.device)
        if ctx.restoring:  # `ltbench eval`: text embeddings, projection and scale come from model.pt
            return
        assert ctx.class_names is not None, "the engine refuses a run without class names"
        with torch.no_grad():
            model.classifier.weight.copy_(text_embeddings(model, ctx.class_names, ctx.hp["prompt"], ctx.device))
        ctx.record.update({"zero_shot": {"prompt": ctx.hp["prompt"], "logit_scale": scale, "embedding_dim": dim},
                           **tte_record(ctx.hp)})

    def report_model(self, model: torch.nn.Module, ctx: StageContext) -> torch.nn.Module:
        return tte_model(model, ctx.hp)

    def report_splits(self, splits: TrainSplits, ctx: StageContext) -> TrainSplits:
        return tte_splits(splits, ctx.hp)
