"""Classifier heads of foundation-model methods: CLIP text embeddings of class names, and the cosine
classifier that LIFT (Shi et al., ICML 2024; shijxcs/LIFT) initialises from them, written anew from their
trainer.py, models/classifiers.py and models/models.py and checked against hand computations in
tests/test_lift.py.

- ``prompts``: each class name (``_`` read as a space) in a template: ``default`` is "a photo of a {}.",
  ``ensemble`` CLIP's 80 ImageNet templates (open_clip's ``OPENAI_IMAGENET_TEMPLATES``, the list LIFT's
  utils/templates.py holds), ``classname`` the name alone.
- ``text_embeddings``: per template, CLIP's text embeddings of the prompts, each L2-normalised; their mean
  over the templates (not normalised again, as LIFT).
- ``head_weights``: the embeddings brought into the image features' space: on a CLIP ViT, whose features
  are taken before the image projection P, t P^T normalised again (LIFT's ``text_features @ proj.t()``);
  on a CLIP ResNet the features are in the joint space already and the embeddings stay as they are.
- ``CosineClassifier``: logits s cos(x, w_k) = s x/|x| . w_k/|w_k| (no bias). LIFT's head: scale 25 (their
  config's ``scale``, which ``CosineClassifier(**cfg)`` receives). With a ``projection`` P (zero-shot CLIP):
  s cos(x P, t_k), s = exp(CLIP's logit scale).
- ``class_means``: LIFT's ``class_mean`` initialisation (their ImageNet-21k ViTs): the mean feature of each
  class's training images, unaugmented, L2-normalised.

open_clip is imported by the functions that use it; ``import ltbench`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LtbenchError

PROMPTS = ("default", "ensemble", "classname")
DEFAULT_TEMPLATE = "a photo of a {}."
# LIFT's utils/config.py `_C.scale = 25`, which models/models.py passes to CosineClassifier with **cfg (over the
# class's own default of 30 in models/classifiers.py, which no LIFT run uses)
LIFT_SCALE = 25.0
TEXT_BATCH = 1000  # prompts per text-tower forward (LIFT splits by 1000 when memory runs out)
OPENAI_VOCAB = 49408  # the byte-pair vocabulary of CLIP's own tokenizer (open_clip's SimpleTokenizer)


def templates(prompt: str) -> list[str]:
    """The templates of a ``prompt`` setting, each with one "{}" for the class name."""
    if prompt == "default":
        return [DEFAULT_TEMPLATE]
    if prompt == "classname":
        return ["{}"]
    if prompt == "ensemble":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    raise ValueError(f"unknown prompt {prompt!r}; one of {', '.join(PROMPTS)}")


def prompts(class_names: Sequence[str], template: str) -> list[str]:
    """One prompt per class: ``template`` with the class name, "_" read as a space (LIFT's)."""
    return [template.format(str(name).replace("_", " ")) for name in class_names]


def _tokenizer(clip: nn.Module) -> Any:
    """CLIP's byte-pair tokenizer at the model's context length (every CLIP that ltbench builds has CLIP's
    own vocabulary; one line for a text tower of another)."""
    import open_clip

    if getattr(clip, "vocab_size", OPENAI_VOCAB) != OPENAI_VOCAB:
        raise LtbenchError(f"this CLIP's text tower has a vocabulary of {clip.vocab_size} tokens, not CLIP's "
                           f"{OPENAI_VOCAB}; ltbench tokenizes class names for CLIP's own vocabulary only.")
    return open_clip.SimpleTokenizer(context_length=clip.context_length)


@torch.no_grad()
def text_embeddings(model: nn.Module, class_names: Sequence[str], prompt: str = "default",
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(classes, embedding) float32: for each template of ``prompt``, CLIP's text embeddings of the classes'
    prompts, each L2-normalised, averaged over the templates. ``model``: a CLIP ``PretrainedModel``
    (its text tower, frozen, runs on ``device`` in eval mode and float32)."""
    clip = getattr(model, "clip", None)
    if clip is None:
        raise LtbenchError("text features need a CLIP backbone (one with a text tower): clip_vit_b16, clip_vit_l14, "
                           "clip_rn50 (`ltbench list backbones`).")
    tokenize = _tokenizer(clip)
    was_training = clip.training
    clip.eval()  # its image tower is the model's own: put back as it was below
    chosen = templates(prompt)
    texts = [p for template in chosen for p in prompts(class_names, template)]  # template-major
    try:  # every template's prompts together, TEXT_BATCH a forward pass (80 templates: not 80 small passes)
        emb = torch.cat([model.encode_text(tokenize(texts[i:i + TEXT_BATCH]).to(device)).float()
                         for i in range(0, len(texts), TEXT_BATCH)])
    finally:
        clip.train(was_training)
    return F.normalize(emb.view(len(chosen), len(class_names), -1), dim=-1).mean(0)


def head_weights(model: nn.Module, text: torch.Tensor) -> torch.Tensor:
    """Text embeddings as rows of a cosine classifier on the model's features: through a CLIP ViT's image
    projection P (features before it): t P^T, L2-normalised; as they are where the features are CLIP's
    joint space (a CLIP ResNet)."""
    projection = getattr(model, "image_projection", None)
    if projection is None:
        return text
    return F.normalize(text @ projection.detach().to(text).T, dim=-1)


class CosineClassifier(nn.Module):
    """logits = scale * cos(x, w_k) for each class row w_k, no bias (LIFT's CosineClassifier). With a
    ``projection`` (a buffer, not trained) the features are projected first: zero-shot CLIP's
    exp(logit_scale) cos(x P, t_k). ``scale`` is a buffer, so model.pt holds it."""

    def __init__(self, in_features: int, out_features: int, scale: float = LIFT_SCALE,
                 projection: torch.Tensor | None = None):
        super().__init__()
        dim = in_features if projection is None else projection.shape[1]
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, dim))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("projection", None if projection is None else projection.detach().clone().float())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LIFT's random init: rows uniform in [-1, 1], those longer than 1 scaled to length 1."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            x = x @ self.projection.to(x.dtype)
        w = F.normalize(self.weight, dim=-1).to(x.dtype)
        return self.scale.to(x.dtype) * F.linear(F.normalize(x, dim=-1), w)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={float(self.scale):g}" + \
            (", projected" if self.projection is not None else "")


def clip_logit_scale(model: nn.Module) -> float:
    """exp of a CLIP model's learned logit scale (100 for OpenAI's weights): zero-shot CLIP's temperature."""
    return math.exp(float(model.clip.logit_scale.detach()))


@torch.no_grad()
def class_means(features: nn.Module, splits: Any, num_classes: int, device: torch.device,
                batch_size: int = 256) -> torch.Tensor:
    """(classes, dim): the mean feature of each class's training images (unaugmented, the extractor in eval
    mode), L2-normalised: LIFT's ``class_mean`` head initialisation. A class without images gets zeros."""
    was_training = features.training
    features.eval()
    sums, counts = None, torch.zeros(num_classes, device=device)
    try:
        for x, y in splits.eval_batches("train", batch_size, device):
            f = features(x).float()
            if sums is None:
                sums = torch.zeros(num_classes, f.shape[1], device=device)
            sums.index_add_(0, y, f)
            counts += torch.bincount(y, minlength=num_classes)
    finally:
        features.train(was_training)
    if sums is None:
        raise LtbenchError("class-mean initialisation: the benchmark has no training images.")
    return F.normalize(sums / counts.clamp_min(1)[:, None], dim=-1)
