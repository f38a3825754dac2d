"""Built-in backbones. Every model is an ``LTModel``: a feature extractor and a final linear
classifier kept apart, so that decoupled methods can freeze one and retrain the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ..errors import LtbenchError
from ..files import file_sha256
from ..registry import backbones


class LTModel(nn.Module):
    """``features``: images -> (N, feature_dim); ``classifier``: nn.Linear(feature_dim, num_classes)."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --- ResNet-32 for CIFAR (the model of Cao et al. 2019: 3 stages of 5 basic blocks, 16/32/64) ---

class _BasicBlockA(nn.Module):
    """Basic block with the parameter-free "option A" shortcut (stride-2 subsampling, zero-padded
    channels), as in He et al.'s CIFAR ResNets."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetFeatures(nn.Module):
    def __init__(self, blocks_per_stage: int = 5, widths: tuple[int, int, int] = (16, 32, 64), in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(_BasicBlockA(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@backbones.register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> LTModel:
    """ResNet-32 for 32x32 images (Cao et al.; 16/32/64 channels, about 0.46M parameters)."""
    model = LTModel(CifarResNetFeatures(5, (16, 32, 64), in_channels), 64, num_classes)
    nn.init.kaiming_normal_(model.classifier.weight)
    return model


@backbones.register("resnet34_cifar")
def resnet34_cifar(num_classes: int, in_channels: int = 3) -> LTModel:
    """torchvision's ResNet-34 with a 3x3 stride-1 stem and no max-pool (the WB authors' CIFAR
    backbone); 512-d feature."""
    net = torchvision.models.resnet34(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return LTModel(net, 512, num_classes)


@backbones.register("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 1) -> LTModel:
    """A three-conv network for tiny images (digits-LT, 8x8); 128-d feature."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *block(in_channels, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return LTModel(features, 128, num_classes)


# --- torchvision ImageNet backbones (the large benchmarks) ---

def _torchvision_resnet(arch: str, num_classes: int, in_channels: int) -> LTModel:
    """torchvision's ``arch`` with random weights and its fc replaced by Identity, so the feature
    extractor's state dict has torchvision's keys and --init-weights takes a torchvision state dict."""
    net = getattr(torchvision.models, arch)(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    return LTModel(net, 2048, num_classes)


@backbones.register("resnet50")
def resnet50(num_classes: int, in_channels: int = 3) -> LTModel:
    """ResNet-50 (torchvision); 2048-d feature. iNaturalist 2018 (Kang et al.)."""
    return _torchvision_resnet("resnet50", num_classes, in_channels)


@backbones.register("resnext50_32x4d")
def resnext50_32x4d(num_classes: int, in_channels: int = 3) -> LTModel:
    """ResNeXt-50 32x4d (torchvision); 2048-d feature. ImageNet-LT (Kang et al., WB)."""
    return _torchvision_resnet("resnext50_32x4d", num_classes, in_channels)


@backbones.register("resnet152")
def resnet152(num_classes: int, in_channels: int = 3) -> LTModel:
    """ResNet-152 (torchvision); 2048-d feature. Places-LT, from ImageNet weights (--init-weights)."""
    return _torchvision_resnet("resnet152", num_classes, in_channels)


def build_backbone(name: str, num_classes: int, in_channels: int) -> LTModel:
    return backbones.get(name)(num_classes=num_classes, in_channels=in_channels)


def weights_id(path: Path) -> str:
    """How a spec names a file of initial weights: "sha256:<hex>"."""
    return "sha256:" + file_sha256(path)


def check_initial_weights(path: Path | None, expected: str) -> None:
    if path is None or not Path(path).is_file():
        raise LtbenchError(f"this run starts from initial weights {expected[:19]}..., but --init-weights "
                           f"{path or '(not given)'} is not a file; pass the same weights file again.")
    if weights_id(Path(path)) != expected:
        raise LtbenchError(f"--init-weights {path} is not the file this run was specified with ({expected[:19]}...).")


def load_initial_weights(model: LTModel, path: Path | None) -> dict[str, Any]:
    """Load a state dict (e.g. torchvision's ImageNet weights) into the feature extractor; the source
    classifier (fc.*, classifier.*) is dropped. Returns what was loaded, for the record."""
    assert path is not None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LtbenchError(f"--init-weights {path}: not a readable torch state dict ({type(exc).__name__}).") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise LtbenchError(f"--init-weights {path}: expected a state dict, found {type(state).__name__}.")
    clean = {}
    for k, v in state.items():
        k = k.removeprefix("module.").removeprefix("features.")
        if not k.startswith(("fc.", "classifier.")):
            clean[k] = v
    own = model.features.state_dict()
    matched = {k: v for k, v in clean.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise LtbenchError(f"--init-weights {path}: none of its {len(clean)} tensors fit the backbone's "
                           f"feature extractor; is it a state dict of the same architecture?")
    model.features.load_state_dict(matched, strict=False)
    return {"sha256": weights_id(Path(path)), "loaded": len(matched),
            "not_loaded": sorted(set(own) - set(matched))[:20]}
