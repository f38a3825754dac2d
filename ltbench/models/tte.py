"""Test-time ensembling (LIFT, Shi et al., ICML 2024: ``tte``, ``expand``, ``tte_mode`` in their trainer.py):
each evaluation image is resized so that its shorter side is the model's input size plus ``expand`` (24 in
LIFT's CLIP ViT-B/16 config, 21 in their ViT-L/14 one), cut into crops of the input size (``five``: the four
corners and the centre, torchvision's FiveCrop; ``ten``: those of the image and of its mirror image, TenCrop),
and the model's logits of the crops are averaged (their test(): the crops of a batch through the model, the
logits' mean over the crops).

The crops are the data's business, as in LIFT (their test loader resizes the original PIL image): the splits of
``Method.report_splits`` (ltbench.data.resolution.with_tte_crops) give batches of views (N, K, C, H, W) made from
each whole image, and ``CropEnsemble`` averages the model's logits over K. It takes nothing else: crops of an
image already cut to the evaluation view (Resize(R * 8 // 7) + CenterCrop(R)) would not be LIFT's."""

from __future__ import annotations

import torch
import torch.nn as nn


class CropEnsemble(nn.Module):
    """Evaluation of ``model`` with test-time ensembling: the mean of its logits over the crops of each image.
    Only for evaluation (the engine's final report, `ltbench eval`); the wrapped model is what is saved.
    ``expand`` and ``mode`` say which crops the data must give (``Method.report_splits``)."""

    def __init__(self, model: nn.Module, expand: int = 24, mode: str = "five"):
        super().__init__()
        self.model, self.expand, self.mode = model, int(expand), mode

    @property
    def classifier(self) -> nn.Module:  # the wrapped model's (its norms in the report)
        return self.model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes): the mean logits over the K views of (N, K, C, H, W)."""
        if x.dim() != 5:
            raise ValueError(f"CropEnsemble takes the crops of each image, (N, K, C, H, W), not {tuple(x.shape)}: "
                             "evaluate on the splits of Method.report_splits (ltbench.data.resolution.with_tte_crops)")
        return torch.stack([self.model(v) for v in x.unbind(1)]).mean(0)
