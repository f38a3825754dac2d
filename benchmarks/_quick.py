"""What the benchmark scripts share in --quick mode (a helper module, not a script: names starting
with "_" are not run by CI's benchmark loop nor checked for --quick).

``register_quick_backbones`` adds two backbones to ltbench's registry, in this process only (the
registry's public ``register``; jobs started as other processes do not see them):

- ``quick_cnn``: a 4x4 average pooling, then two 3x3 convolutions (16 and 32 channels, BatchNorm, ReLU)
  and a global pooling: a 32x32 CIFAR image costs well under 1/100 of what ResNet-32 costs;
- ``quick_cnn_3experts``: its multi-expert variant for RIDE / SADE (ltbench's MultiExpertModel: the
  pooling and the first convolution shared, per expert a 24-channel convolution and a cosine classifier).

The engine, the data and the methods run exactly as with any other backbone; only the arithmetic is
smaller, so that a CPU exercises the CIFAR-shaped code paths in seconds.
"""

from __future__ import annotations

from typing import Any

QUICK_BACKBONE = "quick_cnn"
QUICK_EXPERTS = "quick_cnn_3experts"


def register_quick_backbones() -> None:
    from torch import nn

    from ltbench.models.backbones import LTModel
    from ltbench.models.experts import MultiExpertModel
    from ltbench.registry import backbones

    if QUICK_BACKBONE in backbones.names():
        return

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    @backbones.register(QUICK_BACKBONE)
    def quick_cnn(num_classes: int, in_channels: int = 3) -> Any:
        features = nn.Sequential(nn.AvgPool2d(4), *block(in_channels, 16), *block(16, 32),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return LTModel(features, 32, num_classes)

    @backbones.register(QUICK_EXPERTS)
    def quick_cnn_3experts(num_classes: int, in_channels: int = 3) -> Any:
        shared = nn.Sequential(nn.AvgPool2d(4), *block(in_channels, 16))
        experts = [nn.Sequential(*block(16, 24), nn.AdaptiveAvgPool2d(1), nn.Flatten()) for _ in range(3)]
        return MultiExpertModel(QUICK_EXPERTS, shared, experts, 24, num_classes, single=QUICK_BACKBONE)


def quick_backbone_for(method: Any) -> str:
    """The quick backbone for a method: the multi-expert variant where the method runs on one."""
    return QUICK_EXPERTS if method.backbone_for("small_cnn") != "small_cnn" else QUICK_BACKBONE


def write_record(path: Any, record: dict[str, Any]) -> None:
    """Write a benchmark's JSON record to ``path`` (a pathlib.Path; None: nowhere) and say where."""
    import json

    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
