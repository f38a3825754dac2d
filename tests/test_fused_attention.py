"""The ViTs of ltbench.models.pretrained train with PyTorch's fused attention (issue 24, item 6): in a training
step every attention layer of open_clip's and timm's image towers dispatches a fused scaled-dot-product kernel
(on the CPU its flash kernel; on a GPU flash, memory-efficient or cuDNN, checked by benchmarks/gpu_acceptance.py),
forward and backward, whatever the tuning mode, and never the unfused math path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from ltbench.models import peft
from ltbench.registry import backbones

pytest.importorskip("open_clip")
pytest.importorskip("timm")


class AttentionOps(TorchDispatchMode):
    """Counts the ops named "...attention..." that run (fused kernels; the math path runs none)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if "attention" in func.__name__:
            self.ops[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def training_step_ops(name: str, mode: str) -> Counter[str]:
    torch.manual_seed(0)
    model = backbones.get(name)(10, 3)
    if mode in peft.STRUCTURAL:
        peft.insert(model, {"tuning": mode, "adapter_dim": 0, "vpt_len": 2, "lora_alpha": 1.0}, 10)
    peft.freeze(model, mode)
    model.train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)  # every block's attention then has a backward
    with AttentionOps() as seen:
        model(x).sum().backward()
    return seen.ops


@pytest.mark.parametrize("name", ["clip_vit_tiny", "timm_vit_tiny"])
@pytest.mark.parametrize("mode", ["adaptformer", "lora", "vpt_deep", "full"])
def test_training_runs_fused_attention(name: str, mode: str) -> None:
    ops = training_step_ops(name, mode)
    assert ops == {"_scaled_dot_product_flash_attention_for_cpu.default": 2,  # 2 blocks
                   "_scaled_dot_product_flash_attention_for_cpu_backward.default": 2}


def test_the_count_sees_the_math_path() -> None:
    """The check can fail: with only the math backend allowed, no fused kernel runs."""
    with sdpa_kernel(SDPBackend.MATH):
        assert training_step_ops("clip_vit_tiny", "adaptformer") == {}
