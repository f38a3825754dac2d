"""Parameter-efficient tuning, a stage option any method can use (``STAGE.tuning``, schema.TUNINGS): what
trains besides the classifier, and the small modules that some modes add to a ViT. The formulas,
initialisations and default sizes are LIFT's (Shi et al., ICML 2024; shijxcs/LIFT models/peft_modules.py and
peft_vit.py), written here anew and checked against hand computations in tests/test_peft.py.

- ``full``: every parameter trains (the engine's behaviour before this option; LIFT's full tuning trains
  the transformer blocks only, not the embeddings and the final norm).
- ``linear``: the classifier only; the feature extractor stays in eval mode.
- ``bias``: the biases of the ViT's blocks (of the whole feature extractor on other backbones).
- ``layernorm``: the LayerNorms of the ViT's blocks (of the feature extractor on other backbones).
- ``vpt_shallow`` / ``vpt_deep``: ``vpt_len`` prompt tokens appended after the embedding / fresh ones at
  every block (replacing the previous block's), uniform in +-sqrt(6 / (3 patch_h patch_w + width)); the
  last block drops them, so the pooled token is the class token as before.
- ``adapter``: after each block's MLP, h + up(relu(down(LN(h)))), up zero at the start.
- ``adaptformer``: beside each block's MLP, mlp(LN2(x)) + s up(relu(down(LN(x)))), x the block's residual
  stream, s learnable from 1, up zero at the start.
- ``lora``: the attention's query and value projections become W x + (lora_alpha / r) (x A B) (A
  Kaiming-uniform (width, r), B zero (r, width)).
- ``ssf``: a scale and shift gamma y + beta (gamma ~ N(1, 0.02), beta ~ N(0, 0.02)) after each linear layer
  (qkv, attention output, MLP in and out) and each LayerNorm of the blocks.

The modules join the model when it is built (``insert``), so every checkpoint and model.pt of a run loads
into the model as built; ``freeze`` chooses, as a stage starts, what trains. LoRA and SSF change weights
through torch's parametrizations (W + delta, gamma W and gamma b + beta: the same outputs), so they reach
open_clip's nn.MultiheadAttention as well as timm's qkv Linear.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

STRUCTURAL = ("vpt_shallow", "vpt_deep", "adapter", "adaptformer", "lora", "ssf")  # modes that add modules
SIZES = ("vpt_len", "adapter_dim", "lora_alpha")  # their settings (schema.GROUPS)


# ------------------------------------------------------------------------------ the modules


class Bottleneck(nn.Module):
    """LayerNorm, down-projection, ReLU, up-projection (zero at the start): Adapter; times a learnable
    scale from 1 (``scaled``): AdaptFormer."""

    def __init__(self, dim: int, width: int, scaled: bool = False):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        self.scale = nn.Parameter(torch.ones(1)) if scaled else None
        nn.init.kaiming_normal_(self.down.weight, a=math.sqrt(5))
        for p in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(F.relu(self.down(self.ln(x))))
        return out if self.scale is None else out * self.scale


class AdapterMLP(nn.Module):
    """Adapter: the block's MLP, then h + adapter(h)."""

    def __init__(self, mlp: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.mlp, self.adapter = mlp, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(x)
        return h + self.adapter(h)


class InputTap(nn.Module):
    """The norm before a block's MLP, keeping its input (the block's residual stream) for AdaptFormer."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.norm(x)


class ParallelMLP(nn.Module):
    """AdaptFormer: mlp(norm(x)) + branch(x), x what ``tap`` saw."""

    def __init__(self, mlp: nn.Module, branch: Bottleneck, tap: InputTap):
        super().__init__()
        self.mlp, self.branch = mlp, branch
        self._tap = (tap,)  # not a submodule here: it is the block's

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tap = self._tap[0]
        x, tap.seen = tap.seen, None
        return self.mlp(h) + self.branch(x)


class Prompts(nn.Module):
    """VPT's prompt tokens (n, width), uniform in +-sqrt(6 / (3 patch_h patch_w + width))."""

    def __init__(self, n: int, width: int, patch: tuple[int, int]):
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch[0] * patch[1] + width))
        self.tokens = nn.Parameter(torch.empty(n, width).uniform_(-bound, bound))


class PromptedBlock(nn.Module):
    """A block with VPT prompts: ``prompts`` replace the ``incoming`` ones of the previous block (none at the
    first) before it runs; ``drop`` tokens are cut from the end after it (the last block: the prompts)."""

    def __init__(self, block: nn.Module, prompts: Prompts | None, incoming: int, drop: int, seq_dim: int):
        super().__init__()
        self.block, self.prompts = block, prompts
        self.incoming, self.drop, self.seq_dim = incoming, drop, seq_dim

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        d = self.seq_dim
        if self.prompts is not None:
            x = x.narrow(d, 0, x.shape[d] - self.incoming)
            p = self.prompts.tokens.to(x.dtype)
            shape = (x.shape[0], -1, -1) if d == 1 else (-1, x.shape[1], -1)
            x = torch.cat([x, (p.unsqueeze(0) if d == 1 else p.unsqueeze(1)).expand(*shape)], dim=d)
        x = self.block(x, *args, **kwargs)
        return x.narrow(d, 0, x.shape[d] - self.drop) if self.drop else x


class LoRAQV(nn.Module):
    """A parametrization of a fused (3 width, width) qkv weight: W + s [(A_q B_q)^T; 0; (A_v B_v)^T], s =
    alpha / r; the same as LIFT's q + s x A_q B_q and v + s x A_v B_v."""

    def __init__(self, width: int, rank: int, alpha: float):
        super().__init__()
        self.a_q, self.a_v = nn.Parameter(torch.empty(width, rank)), nn.Parameter(torch.empty(width, rank))
        self.b_q, self.b_v = nn.Parameter(torch.zeros(rank, width)), nn.Parameter(torch.zeros(rank, width))
        for a in (self.a_q, self.a_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.scaling = alpha / rank

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dq = (self.a_q @ self.b_q).T * self.scaling
        dv = (self.a_v @ self.b_v).T * self.scaling
        return w + torch.cat([dq, torch.zeros_like(dq), dv]).to(w.dtype)


class SSF(nn.Module):
    """SSF's scale gamma ~ N(1, 0.02) and shift beta ~ N(0, 0.02) of one layer's ``dim`` outputs."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))


class SSFWeight(nn.Module):
    """gamma W (rows of a linear weight, or a LayerNorm's weight): with SSFBias, gamma y + beta."""

    def __init__(self, ssf: SSF):
        super().__init__()
        self._ssf = (ssf,)  # SSFBias holds it (registered once)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self._ssf[0].scale
        return w * s.view(-1, *([1] * (w.dim() - 1))).to(w.dtype)


class SSFBias(nn.Module):
    """gamma b + beta."""

    def __init__(self, ssf: SSF):
        super().__init__()
        self.ssf = ssf

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return (b * self.ssf.scale + self.ssf.shift).to(b.dtype)


TUNING_MODULES = (Bottleneck, Prompts, LoRAQV, SSF)  # what trains under the structural modes


# ------------------------------------------------------------------------------ where they go


@dataclass
class BlockParts:
    """One transformer block's layers, by role: the qkv projection (module, weight name, bias name), the
    attention output and the MLP's linear layers, the names of its two norms, the name of its MLP."""

    qkv: tuple[nn.Module, str, str]
    out: nn.Linear
    fc1: nn.Linear
    fc2: nn.Linear
    norm1: str
    norm2: str


@dataclass
class ViTParts:
    """A ViT image tower's blocks (``blocks[i]`` assignable), its token width, patch size and the dimension
    of the sequence in the blocks' input (1: batch first)."""

    blocks: nn.Module
    width: int
    patch: tuple[int, int]
    seq_dim: int
    parts: list[BlockParts]


def vit_parts(features: nn.Module) -> ViTParts | None:
    """The blocks of an open_clip VisionTransformer or a timm VisionTransformer (``features.net`` or
    ``features``), None for any other network (or a ViT whose blocks are of another kind)."""
    net = getattr(features, "net", features)
    if "open_clip" in sys.modules and isinstance(net, sys.modules["open_clip"].transformer.VisionTransformer):
        block_type = sys.modules["open_clip"].transformer.ResidualAttentionBlock
        blocks = net.transformer.resblocks
        if not all(type(b) is block_type for b in blocks):
            return None
        parts = [BlockParts((b.attn, "in_proj_weight", "in_proj_bias"), b.attn.out_proj, b.mlp.c_fc, b.mlp.c_proj,
                            "ln_1", "ln_2") for b in blocks]
        return ViTParts(blocks, net.transformer.width, tuple(net.conv1.kernel_size),
                        1 if getattr(net.transformer, "batch_first", True) else 0, parts)
    if "timm" in sys.modules and isinstance(net, sys.modules["timm"].models.vision_transformer.VisionTransformer):
        block_type = sys.modules["timm"].models.vision_transformer.Block
        blocks = net.blocks
        if not all(type(b) is block_type and isinstance(getattr(b.attn, "qkv", None), nn.Linear) for b in blocks):
            return None
        parts = [BlockParts((b.attn.qkv, "weight", "bias"), b.attn.proj, b.mlp.fc1, b.mlp.fc2, "norm1", "norm2")
                 for b in blocks]
        return ViTParts(blocks, net.embed_dim, tuple(net.patch_embed.proj.kernel_size), 1, parts)
    return None


def default_dim(num_classes: int, n_blocks: int) -> int:
    """LIFT's bottleneck width when adapter_dim is 0: 2^floor(log2(classes / (2 blocks))), at least 1."""
    return 2 ** max(0, int(math.log2(num_classes / (n_blocks * 2))))


# ------------------------------------------------------------------------------ insert, freeze, count


def insert(model: nn.Module, hp: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """Add the modules of ``hp["tuning"]`` (a structural mode) to ``model.features`` (a ViT), drawn from
    torch's generator (the run's seed); what the record says of them."""
    mode = hp["tuning"]
    vit = vit_parts(model.features)
    if vit is None:
        raise ValueError(f"tuning={mode} needs a ViT")
    record: dict[str, Any] = {"tuning": mode, "blocks": len(vit.parts)}
    if mode in ("vpt_shallow", "vpt_deep"):
        _insert_vpt(vit, hp["vpt_len"], deep=mode == "vpt_deep")
        record["vpt_len"] = hp["vpt_len"]
    elif mode == "ssf":
        for block, part in zip(vit.blocks, vit.parts, strict=True):
            _insert_ssf(block, part)
    else:
        dim = hp["adapter_dim"] or default_dim(num_classes, len(vit.parts))
        record["adapter_dim"] = dim
        for i, part in enumerate(vit.parts):
            block = vit.blocks[i]
            if mode == "adapter":
                block.mlp = AdapterMLP(block.mlp, Bottleneck(vit.width, dim))
            elif mode == "adaptformer":
                tap = InputTap(getattr(block, part.norm2))
                setattr(block, part.norm2, tap)
                block.mlp = ParallelMLP(block.mlp, Bottleneck(vit.width, dim, scaled=True), tap)
            else:
                module, name, _ = part.qkv
                parametrize.register_parametrization(module, name, LoRAQV(vit.width, dim, hp["lora_alpha"]))
                record["lora_alpha"] = hp["lora_alpha"]
    return record


def _insert_vpt(vit: ViTParts, n: int, deep: bool) -> None:
    last = len(vit.parts) - 1
    for i in range(last + 1):
        prompts = Prompts(n, vit.width, vit.patch) if deep or i == 0 else None
        vit.blocks[i] = PromptedBlock(vit.blocks[i], prompts, incoming=n if prompts is not None and i > 0 else 0,
                                      drop=n if i == last else 0, seq_dim=vit.seq_dim)


def _insert_ssf(block: nn.Module, part: BlockParts) -> None:
    layers = [part.qkv, (part.out, "weight", "bias"), (part.fc1, "weight", "bias"), (part.fc2, "weight", "bias"),
              (getattr(block, part.norm1), "weight", "bias"), (getattr(block, part.norm2), "weight", "bias")]
    for layer, w, b in layers:
        ssf = SSF(getattr(layer, w).shape[0])
        if getattr(layer, b) is None:  # a layer without a bias gets a zero one (frozen): beta needs one
            setattr(layer, b, nn.Parameter(torch.zeros_like(ssf.shift), requires_grad=False))
        parametrize.register_parametrization(layer, b, SSFBias(ssf))
        parametrize.register_parametrization(layer, w, SSFWeight(ssf))


def trained_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """The feature extractor's parameters that ``mode`` trains (the classifier always trains)."""
    features = model.features
    if mode == "full":
        return list(features.parameters())
    if mode == "linear":
        return []
    if mode in STRUCTURAL:
        return [p for m in features.modules() if isinstance(m, TUNING_MODULES) for p in m.parameters()]
    vit = vit_parts(features)
    scope = [vit.blocks] if vit is not None else [features]
    if mode == "bias":
        return [p for s in scope for n, p in s.named_parameters() if n.endswith("bias")]
    return [p for s in scope for m in s.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]


def freeze(model: nn.Module, mode: str) -> None:
    """As a stage starts: the feature extractor's parameters train as ``mode`` says (``full``: as they
    are, for the method to choose)."""
    if mode == "full":
        return
    model.features.requires_grad_(False)
    for p in trained_parameters(model, mode):
        p.requires_grad_(True)


def frozen_part(model: nn.Module, hp: Mapping[str, Any], frozen_stage: bool) -> nn.Module | None:
    """The part of ``model`` a stage keeps in eval mode: the feature extractor of a classifier-only stage
    (``frozen_stage``) or under ``tuning=linear``; None otherwise."""
    return model.features if frozen_stage or hp.get("tuning") == "linear" else None


def problems(model: nn.Module, mode: str, name: str) -> list[str]:
    """Why ``mode`` cannot tune ``model`` (backbone ``name``; a model built on the meta device will do)."""
    if mode == "full":
        return []
    try:
        features = model.features
    except Exception:  # a multi-expert model: no single feature extractor
        return [f"tuning={mode} needs one feature extractor and classifier; {name} has several experts (use "
                "tuning=full)"]
    if mode in STRUCTURAL and vit_parts(features) is None:
        return [f"tuning={mode} adds modules to a ViT's blocks (open_clip's or timm's VisionTransformer); {name} is "
                "not one: use full, linear, bias or layernorm, or a ViT backbone (`ltbench list backbones`)"]
    if mode in ("bias", "layernorm") and not trained_parameters(model, mode):
        what = "biases" if mode == "bias" else "LayerNorms"
        return [f"tuning={mode}: {name} has no {what} to train; use full, linear or another mode"]
    return []


class ParamCount:
    """The parameters that train in any stage of a run, and the total: what result.json's ``params`` says."""

    def __init__(self) -> None:
        self.trained: set[int] = set()
        self.by_stage: dict[str, int] = {}

    def stage(self, stage: str, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.trained |= {id(p) for p in params}
        self.by_stage[stage] = sum(p.numel() for p in params)

    def record(self, model: nn.Module, extra: Mapping[str, int] | None = None) -> dict[str, Any]:
        params = list(model.parameters())
        return {"trainable": sum(p.numel() for p in params if id(p) in self.trained),
                "total": sum(p.numel() for p in params), "by_stage": dict(self.by_stage), **(extra or {})}


def run_tunings(spec: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(stage as a user names it, its values) of every stage of a run and its stage-1 run whose tuning adds
    modules, in training order; ``spec`` a RunSpec."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    parent = spec.parent_spec()
    if parent is not None:
        out += [("stage1", hp) for hp in parent.stages.values() if hp.get("tuning", "full") in STRUCTURAL]
    out += [(st, hp) for st, hp in spec.stages.items() if hp.get("tuning", "full") in STRUCTURAL]
    return out


def insert_run(model: nn.Module, spec: Any, num_classes: int) -> dict[str, Any] | None:
    """The tuning modules a run's model holds (those of its stages, or of its stage-1 run), as ``insert``
    adds them; None when no stage adds any."""
    tunings = run_tunings(spec)
    return insert(model, tunings[0][1], num_classes) if tunings else None


def sizes(hp: Mapping[str, Any]) -> dict[str, Any]:
    return {"tuning": hp["tuning"], **{k: hp[k] for k in SIZES if k in hp}}


def modes(spec: Any) -> Iterable[tuple[str, str]]:
    """(stage as a user names it, tuning) of every training stage of a run and of its stage-1 run."""
    parent = spec.parent_spec()
    if parent is not None:
        yield from (("stage1", hp.get("tuning", "full")) for hp in parent.stages.values())
    yield from ((st, hp.get("tuning", "full")) for st, hp in spec.stages.items())
