"""Multi-expert backbones: one shared early network, then per-expert later blocks, each expert with
its own cosine classifier (RIDE, Wang et al. ICLR 2021; SADE, Zhang et al. NeurIPS 2022).

Layout as in their code (frank-xwang/RIDE-LongTailRecognition, Vanint/SADE-AgnosticLT, both
``reduce_dimension=True, use_norm=True``):

- ``resnet32_3experts`` (ldam_drw_resnets/expert_resnet_cifar.py): the stem and the first stage
  (16 channels) are shared; each expert has its own second and third stage at reduced width
  (24 and 48 channels instead of 32 and 64) and a 48-d cosine classifier.
- ``resnext50_32x4d_3experts`` / ``resnet50_3experts`` (fb_resnets/Expert_ResNeXt.py,
  Expert_ResNet.py): stem, layer1 and layer2 shared; each expert has its own layer3 and layer4 at
  reduced width (planes 192 and 384 instead of 256 and 512; 1536-d feature) and a cosine classifier.
- ``small_cnn_3experts`` (ltbench's own, for digits-LT): small_cnn's first two convolutions shared,
  each expert a 96-channel convolution (128 in small_cnn) and a 96-d cosine classifier.

Expert k's logits are z_k = s * cos(f_k(x), w_k,c) with s = 30 (their ``NormedLinear`` times
``s``). ``model(x)`` returns the aggregate sum_k a_k z_k with weights a (a buffer, uniform 1/K by
default: the mean of the experts' logits, as their models return); ``model(x, experts=True)``
returns the (N, K, C) experts' logits, for a method's loss (``Method.forward``).

A multi-expert model has no single feature extractor followed by one linear classifier, so
``model.features`` and ``model.classifier`` raise a clear error: decoupled methods (cRT, LWS, WB,
tau-norm, ...), LDAM's classifier swap, MaxNorm and ``--init-weights`` are refused on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ..errors import LtbenchError
from ..registry import backbones
from .backbones import _BasicBlockA

NUM_EXPERTS = 3
SCALE = 30.0  # s of their NormedLinear logits


class CosineLinear(nn.Module):
    """Cosine classifier: logits_c = cos(x, w_c) = x/||x|| . w_c/||w_c|| (scaled by the model).
    Initialised as their NormedLinear: uniform(-1, 1), rows renormalised."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class MultiExpertModel(nn.Module):
    """``shared``: images -> shared feature maps (one module, used by every expert); ``experts[k]``:
    shared maps -> (N, feature_dim); ``heads[k]``: a cosine classifier. ``expert_weights`` (K,) is the
    aggregation of ``forward`` (uniform by default; SADE learns it at test time, saved with the model)."""

    def __init__(self, name: str, shared: nn.Module, experts: Sequence[nn.Module], feature_dim: int,
                 num_classes: int, single: str, scale: float = SCALE):
        super().__init__()
        self.name, self.single, self.scale, self.feature_dim = name, single, scale, feature_dim
        self.shared = shared
        self.experts = nn.ModuleList(experts)
        self.heads = nn.ModuleList(CosineLinear(feature_dim, num_classes) for _ in experts)
        self.register_buffer("expert_weights", torch.full((len(experts),), 1.0 / len(experts)))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def forward(self, x: torch.Tensor, experts: bool = False) -> torch.Tensor:
        """The aggregated (N, C) logits sum_k a_k z_k, or with ``experts`` the (N, K, C) z_k."""
        h = self.shared(x)
        z = torch.stack([self.scale * head(body(h)) for body, head in zip(self.experts, self.heads, strict=True)], 1)
        return z if experts else self.aggregate(z)

    def aggregate(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K, C) experts' logits -> (N, C): sum_k a_k z_k with the model's ``expert_weights``."""
        return torch.einsum("nkc,k->nc", z, self.expert_weights.to(z.dtype))

    def set_expert_weights(self, weights: torch.Tensor) -> None:
        if weights.shape != self.expert_weights.shape:
            raise ValueError(f"expected {self.num_experts} expert weights, got {tuple(weights.shape)}")
        with torch.no_grad():
            self.expert_weights.copy_(weights.to(self.expert_weights))

    def classifier_norms(self) -> list[float]:
        """Per-class norm of the effective class rows: every expert's cosine row has norm s after
        normalisation, so class c's aggregate row norm is s * sum_k a_k, the same for every class (a
        cosine classifier has no per-class norm bias); what ``evaluation.classifier_norms`` reports."""
        c = self.heads[0].out_features
        return [self.scale * float(self.expert_weights.sum())] * c

    def _refuse(self, what: str) -> LtbenchError:
        return LtbenchError(
            f"backbone {self.name} is a multi-expert model ({self.num_experts} experts behind a shared stem, "
            f"each with its own cosine classifier): it has no single {what}. This method or setting needs one "
            f"(a classifier-only stage, cached features, LDAM's classifier, MaxNorm, --init-weights); use a "
            f"single-expert backbone (--backbone {self.single}), or a multi-expert method (sade, ride).")

    @property
    def features(self) -> nn.Module:  # type: ignore[override]
        raise self._refuse("feature extractor (model.features)")

    @property
    def classifier(self) -> nn.Module:  # type: ignore[override]
        raise self._refuse("linear classifier (model.classifier)")


# --- ResNet-32 for CIFAR: shared stem + stage 1, per-expert stages 2 and 3 (24 / 48 channels) ---

def _cifar_stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[_BasicBlockA(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(blocks)])


def _kaiming_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)


@backbones.register("resnet32_3experts")
def resnet32_3experts(num_classes: int, in_channels: int = 3) -> MultiExpertModel:
    """ResNet-32 with 3 experts (RIDE/SADE on CIFAR): stem and stage 1 (16 ch) shared, per expert
    stages 2-3 at 24/48 channels and a cosine classifier (s 30); about 0.78M parameters."""
    shared = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                           _cifar_stage(16, 16, 5, 1))
    experts = [nn.Sequential(_cifar_stage(16, 24, 5, 2), _cifar_stage(24, 48, 5, 2), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten()) for _ in range(NUM_EXPERTS)]
    model = MultiExpertModel("resnet32_3experts", shared, experts, 48, num_classes, single="resnet32")
    _kaiming_convs(model)
    return model


@backbones.register("small_cnn_3experts")
def small_cnn_3experts(num_classes: int, in_channels: int = 1) -> MultiExpertModel:
    """small_cnn with 3 experts (digits-LT): its 32- and 64-channel convolutions and the max-pool
    shared, per expert a 96-channel convolution (128 in small_cnn) and a cosine classifier (s 30)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    shared = nn.Sequential(*block(in_channels, 32), *block(32, 64), nn.MaxPool2d(2))
    experts = [nn.Sequential(*block(64, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten()) for _ in range(NUM_EXPERTS)]
    return MultiExpertModel("small_cnn_3experts", shared, experts, 96, num_classes, single="small_cnn")


# --- torchvision ResNet-50 / ResNeXt-50: shared stem, layer1, layer2; per-expert layer3-4 ---

def _torchvision_experts(arch: str, num_classes: int, in_channels: int, planes: tuple[int, int] = (192, 384)) -> MultiExpertModel:
    """torchvision's ``arch`` (random init): stem, layer1 and layer2 shared; each expert its own
    layer3 (6 bottlenecks) and layer4 (3) at ``planes`` (their reduce_dimension: 192/384 for 256/512),
    built by torchvision's own ``_make_layer`` (so ResNeXt's groups and width carry over) and
    initialised as torchvision initialises (Kaiming fan-out convolutions, BatchNorm 1/0)."""
    net = getattr(torchvision.models, arch)(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    shared = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
    block = torchvision.models.resnet.Bottleneck
    experts = []
    for _ in range(NUM_EXPERTS):
        net.inplanes = 128 * block.expansion  # layer2's output channels
        body = nn.Sequential(net._make_layer(block, planes[0], 6, stride=2), net._make_layer(block, planes[1], 3, stride=2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in body.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        experts.append(body)
    return MultiExpertModel(f"{arch}_3experts", shared, experts, planes[1] * block.expansion, num_classes, single=arch)


@backbones.register("resnext50_32x4d_3experts")
def resnext50_32x4d_3experts(num_classes: int, in_channels: int = 3) -> MultiExpertModel:
    """ResNeXt-50 32x4d with 3 experts (RIDE/SADE on ImageNet-LT): layer3-4 per expert at 192/384
    planes, 1536-d features, cosine classifiers (s 30)."""
    return _torchvision_experts("resnext50_32x4d", num_classes, in_channels)


@backbones.register("resnet50_3experts")
def resnet50_3experts(num_classes: int, in_channels: int = 3) -> MultiExpertModel:
    """ResNet-50 with 3 experts (RIDE/SADE on iNaturalist 2018): layer3-4 per expert at 192/384
    planes, 1536-d features, cosine classifiers (s 30)."""
    return _torchvision_experts("resnet50", num_classes, in_channels)


# A single-expert backbone -> its multi-expert variant: the backbone a multi-expert method takes when
# the recipe or benchmark would give the single one (Method.backbone_for).
MULTI_EXPERT_VARIANT: dict[str, str] = {
    "resnet32": "resnet32_3experts", "small_cnn": "small_cnn_3experts",
    "resnext50_32x4d": "resnext50_32x4d_3experts", "resnet50": "resnet50_3experts",
}
