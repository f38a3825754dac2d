"""Test-time ensembling (LIFT, Shi et al., ICML 2024: ``tte``, ``expand``, ``tte_mode`` in their trainer.py):
each evaluation image is resized so that its shorter side is the model's input size plus ``expand`` (24 in
LIFT's CLIP ViT-B/16 config, 21 in their ViT-L/14 one), cut into crops of the input size (``five``: the four
corners and the centre, torchvision's FiveCrop; ``ten``: those of the image and of its mirror image, TenCrop),
and the model's logits of the crops are averaged (their test(): the crops of a batch through the model, the
logits' mean over the crops).

``CropEnsemble`` takes either the views already made, (N, K, C, H, W) as LIFT's test loader gives them
(the data's business: LIFT resizes the original PIL image), or a batch of images (N, C, H, W), which it
resizes and crops itself: bilinear with antialiasing (torchvision's ``resize`` of a tensor), the same as
LIFT's up to interpolation rounding when the images are the benchmark's own (resizing and per-channel
normalisation commute: bilinear weights sum to one). Where the images it receives are already an
evaluation view (Resize(R * 8 // 7) + CenterCrop(R) at a pretrained backbone's resolution,
ltbench.data.resolution), its crops are of that centre crop, not of the whole image: the data must give the
views for LIFT's exact protocol."""

from __future__ import annotations

import torch
import torch.nn as nn

CROPS = ("five", "ten")


def crops(x: torch.Tensor, size: tuple[int, int], expand: int, mode: str = "five") -> list[torch.Tensor]:
    """The crops of a batch of images (N, C, H, W): resized to shorter side min(size) + ``expand``, then
    torchvision's five (or ten) crops of ``size``."""
    import torchvision.transforms.functional as TF

    big = TF.resize(x, [min(size) + expand], antialias=True)
    if mode == "five":
        return list(TF.five_crop(big, list(size)))
    if mode == "ten":
        return list(TF.ten_crop(big, list(size)))
    raise ValueError(f"unknown crops {mode!r}; one of {', '.join(CROPS)}")


def input_size(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The size a model's feature extractor takes (a pretrained tower's ``size``), else the images' own."""
    size = getattr(getattr(model, "features", None), "size", None)
    return tuple(size) if size else tuple(x.shape[-2:])  # type: ignore[return-value]


class CropEnsemble(nn.Module):
    """Evaluation of ``model`` with test-time ensembling: the mean of its logits over ``crops``. Only for
    evaluation (the engine's final report, `ltbench eval`); the wrapped model is what is saved."""

    def __init__(self, model: nn.Module, expand: int = 24, mode: str = "five"):
        super().__init__()
        self.model, self.expand, self.mode = model, int(expand), mode

    @property
    def classifier(self) -> nn.Module:  # the wrapped model's (its norms in the report)
        return self.model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes): the mean logits over the views, given (N, K, C, H, W) or made from (N, C, H, W)."""
        views = x.unbind(1) if x.dim() == 5 else crops(x, input_size(self.model, x), self.expand, self.mode)
        return torch.stack([self.model(v) for v in views]).mean(0)
