"""Balanced contrastive learning, BCL (Zhu et al., CVPR 2022, "Balanced Contrastive Learning for
Long-Tailed Visual Recognition"; code: github.com/FlamieZhu/Balanced-Contrastive-Learning).

Two branches on one backbone. The classification view x (the engine's augmented batch, then, under
``--recipe paper``, timm's RandAugment "rand-n2-m10-mstd0.5" as their main.py applies it: the settings
``randaug_n``, ``randaug_m``, ``randaug_mstd``; ltbench.data.autoaugment.rand_augment) trains the
classifier with a logit-compensated CE (logit adjustment, Menon et al. 2021):

    L_LC = CE(s * z + tau * log pi, y)      (z: cosine logits and s the scale, or plain logits and s = 1)

Two contrastive views v1, v2 of the same images (SimCLR-style: random resized crop, flip, colour
jitter, grayscale; built here from x with batched tensor ops) go through the backbone and an MLP
projection head to unit vectors; an MLP of the same shape maps the classifier's class rows to unit
class prototypes c_k ("class complement": every class is in every batch). For an anchor i among the
2N view embeddings, with A = {2N embeddings} + {C prototypes} minus i, P(i) its positives (same
class, the prototype included) and |A_k| the members of class k in A:

    L_BCL(i) = -1/|P(i)| sum_{p in P(i)} log [ exp(u_i.u_p / T) / sum_k 1/|A_k| sum_{a in A_k} exp(u_i.u_a / T) ]

("class averaging": each class's term in the denominator is averaged over its members). The loss
is ce_weight * L_LC + scl_weight * mean_i L_BCL(i) (the authors' --alpha and --beta).

Evaluation runs ``model(x)``, the classifier's logits; the heads are submodules of the model
(``bcl_head``, ``bcl_proto``), so they train, are checkpointed and are kept in model.pt.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltbench.data.autoaugment import rand_augment, rand_augment_draws
from ltbench.engine.evaluation import to_memory_format
from ltbench.errors import LtbenchError
from ltbench.method import Method, Presentation, StageContext
from ltbench.registry import methods
from ltbench.spec.schema import Setting

from .ldam_drw import NormedLinear
from .logit_adjust import TAU, log_prior

# BCL's training recipe per benchmark family, applied under ``--recipe paper`` (the method's own
# paper). imagenet_lt / inat2018: the authors' main.py and README (batch 256, cosine, no warm-up; lr
# 0.1 / 0.2, WD 5e-4 / 1e-4, 90 / 100 epochs; alpha 1.0, beta 0.35, temperature 0.07; head
# 2048 -> 2048 -> 1024). cifar: the authors released no CIFAR code; the values are those of the
# paper's implementation details (ResNet-32, 200 epochs, batch 256, lr 0.15 with 5 warm-up epochs
# and cosine decay, WD 5e-4, lambda 2.0, mu 0.6, MLP 64 -> 512 -> 128) and of a public reproduction
# (sumyeongahn/CUDA_LTR, losses/bcl.py: alpha 2.0, beta 0.6, temperature 0.1). digits: the
# benchmark's own recipe with the CIFAR loss settings. Their loop sets the lr once per epoch, at its start
# (adjust_lr: warm-up (e + 1) / w, then cosine): lr_update=epoch.
_ENGINE = {
    "cifar": {"epochs": 200, "batch_size": 256, "lr": 0.15, "weight_decay": 5e-4, "schedule": "cosine",
              "warmup_epochs": 5},
    "imagenet_lt": {"epochs": 90, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
                    "warmup_epochs": 0},
    "inat2018": {"epochs": 100, "batch_size": 256, "lr": 0.2, "weight_decay": 1e-4, "schedule": "cosine",
                 "warmup_epochs": 0},
}
_SMALL = {"ce_weight": 2.0, "scl_weight": 0.6, "temperature": 0.1, "proj_hidden": 512, "proj_dim": 128}
_LARGE = {"ce_weight": 1.0, "scl_weight": 0.35, "temperature": 0.07, "proj_hidden": 0, "proj_dim": 1024}
# Their RandAugment of the classification view: main.py's --randaug_n 2, --randaug_m 10 and 'mstd0.5'.
RANDAUG = {"randaug_n": 2, "randaug_m": 10.0, "randaug_mstd": 0.5}

# SimCLR's colour augmentation as BCL's "sim" views use it: ColorJitter(0.4, 0.4, 0.4, 0.1) with
# probability 0.8, then grayscale with probability 0.2 (saturation, hue and grayscale: RGB only).
JITTER, HUE, JITTER_P, GRAY_P = 0.4, 0.1, 0.8, 0.2


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """BCL's two-layer head: Linear, BatchNorm1d, ReLU, Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d_out))


def balanced_contrastive_loss(z: torch.Tensor, y: torch.Tensor, protos: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    """Mean of L_BCL(i) (module docstring) over the anchors ``z`` (2N, D), the unit embeddings of the
    two views, view 1 then view 2, of the images labelled ``y`` (N,); ``protos`` (C, D) the unit class
    prototypes, which are members of A (and positives) but never anchors."""
    c = protos.shape[0]
    y2 = torch.cat([y, y])
    members = torch.cat([y2, torch.arange(c, device=y.device)])  # the class of every column of A
    sim = z @ torch.cat([z, protos]).T / temperature  # (2N, 2N + C)
    n2 = z.shape[0]
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[:, :n2] = torch.eye(n2, dtype=torch.bool, device=z.device)
    pos = (members[None, :] == y2[:, None]) & ~self_mask
    # |A_k| of each column's class; the anchor is not in A, so its own class counts one fewer
    size = torch.bincount(members, minlength=c).to(sim.dtype)[members][None, :] - pos.to(sim.dtype)
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()  # stability; cancels in the ratio
    denom = (sim.exp() / size).masked_fill(self_mask, 0).sum(dim=1, keepdim=True)
    log_prob = sim - denom.log()
    return (-(log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean()


def compensated_ce(logits: torch.Tensor, y: torch.Tensor, prior_log: torch.Tensor, scale: float,
                   tau: float) -> torch.Tensor:
    """Logit-compensated CE: CE(scale * logits + tau * log pi, y) (balanced softmax at tau = 1)."""
    return F.cross_entropy(scale * logits + tau * prior_log, y)


# ----------------------------------------------------------------------------- the contrastive views

def view_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The CPU generator of one step's view draws: a pure function of (run seed, epoch, step)."""
    digest = hashlib.blake2b(f"bcl-views {seed} {epoch} {step}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, k: int | None = None) -> torch.Tensor:
    """``n`` (or ``n`` x ``k``) draws of U(lo, hi) from ``gen``."""
    return torch.empty(n if k is None else (n, k)).uniform_(lo, hi, generator=gen)


def draw_view(n: int, h: int, w: int, min_scale: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The random draws of one view of ``n`` images, on the CPU, in a fixed order. Random resized
    crop as torchvision's (area fraction U(min_scale, 1), log aspect ratio U(log 3/4, log 4/3), ten
    tries, the whole image when none fits), its offsets, a flip, the colour jitter's factors and
    whether it applies, grayscale."""
    tries = 10
    area = _uniform(n, min_scale, 1.0, gen, tries)
    ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), gen, tries).exp()
    cw, ch = (area * ratio * h / w).sqrt(), (area / ratio * w / h).sqrt()  # fractions of width, height
    fits = (cw <= 1) & (ch <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)
    ok = fits.any(dim=1)
    cw = torch.where(ok, cw.gather(1, first).squeeze(1), torch.ones(n))
    ch = torch.where(ok, ch.gather(1, first).squeeze(1), torch.ones(n))
    x0, y0 = _uniform(n, 0, 1, gen) * (1 - cw), _uniform(n, 0, 1, gen) * (1 - ch)
    return {"cw": cw, "ch": ch, "x0": x0, "y0": y0, "flip": _uniform(n, 0, 1, gen) < 0.5,
            "bright": _uniform(n, 1 - JITTER, 1 + JITTER, gen), "contrast": _uniform(n, 1 - JITTER, 1 + JITTER, gen),
            "sat": _uniform(n, 1 - JITTER, 1 + JITTER, gen), "hue": _uniform(n, -HUE, HUE, gen),
            "jitter": _uniform(n, 0, 1, gen) < JITTER_P, "gray": _uniform(n, 0, 1, gen) < GRAY_P}


def resized_crop_flip(x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """Crop every image at its box (fractions of the image) and resize it back to the image's size
    (bilinear, one ``grid_sample`` for the batch); mirror the flipped ones."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = d["cw"] * torch.where(d["flip"], -1.0, 1.0)
    theta[:, 1, 1] = d["ch"]
    theta[:, 0, 2] = 2 * d["x0"] + d["cw"] - 1  # the box's centre in [-1, 1]
    theta[:, 1, 2] = 2 * d["y0"] + d["ch"] - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma (ITU-R 601, as torchvision's rgb_to_grayscale); a 1-channel image itself."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``hue`` (N,) turns: RGB -> HSV, h + hue mod 1, -> RGB."""
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    delta = v - x.min(dim=1).values
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    dz = delta.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / dz, torch.where(v == g, (b - r) / dz + 2, (r - g) / dz + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    h = (h + hue.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    table = torch.stack([torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                      (v, p, q))], 1)  # (N, 6, 3, H, W)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def color_jitter(x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness, contrast, then (RGB) saturation and hue, as torchvision's adjust_* functions on
    images in [0, 1], applied to the images whose ``jitter`` is set; then (RGB) grayscale on those
    whose ``gray`` is set. torchvision applies the four jitters in a random order; here the order is
    fixed."""
    def per(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, 1, 1, 1).to(x.dtype)

    y = (x * per(d["bright"])).clamp(0, 1)
    y = (per(d["contrast"]) * y + (1 - per(d["contrast"])) * _gray(y).mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    if x.shape[1] == 3:
        y = (per(d["sat"]) * y + (1 - per(d["sat"])) * _gray(y)).clamp(0, 1)
        y = shift_hue(y, d["hue"].to(x.dtype))
    y = torch.where(d["jitter"].view(-1, 1, 1, 1), y, x)
    if x.shape[1] == 3:
        y = torch.where(d["gray"].view(-1, 1, 1, 1), _gray(y).expand_as(y), y)
    return y


def contrastive_views(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], gen: torch.Generator,
                      min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two SimCLR-style views of the normalised batch ``x``: un-normalised to [0, 1], cropped,
    flipped and colour-jittered with draws from ``gen`` (view 1's, then view 2's), normalised again."""
    n, c, h, w = x.shape
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    raw = (x.float() * s + m).clamp(0, 1)
    views = []
    for _ in range(2):
        d = {k: v.to(x.device) for k, v in draw_view(n, h, w, min_scale, gen).items()}
        views.append(((color_jitter(resized_crop_flip(raw, d), d) - m) / s).to(x.dtype))
    return views[0], views[1]


def randaug_view(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], gen: torch.Generator,
                 hp: dict[str, Any]) -> torch.Tensor:
    """The normalised batch ``x`` through their RandAugment: back to uint8 images, the ops with draws from
    ``gen``, normalised again."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    images = ((x.float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    draws = rand_augment_draws(len(x), gen, hp["randaug_n"], hp["randaug_m"], hp["randaug_mstd"])
    return ((rand_augment(images, draws).float() / 255 - m) / s).to(x.dtype)


def splits_stats(splits: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std that the benchmark's batches are normalised with (``Splits`` and
    ``ImageFileSplits`` both say)."""
    mean, std = getattr(splits, "mean", None), getattr(splits, "std", None)
    if mean is None or std is None:
        raise LtbenchError(f"bcl builds its contrastive views from images, but these splits "
                           f"({type(splits).__name__}) do not say their normalisation (mean/std); run bcl on an "
                           "image benchmark, not on cached features.")
    return tuple(mean), tuple(std)


# ----------------------------------------------------------------------------- the method

@methods.register()
class BCL(Method):
    name = "bcl"
    presentation = Presentation(order=40, in_default_run=False)
    description = "balanced contrastive learning: logit-adjusted CE + balanced SupCon with class prototypes (Zhu et al. 2022)"
    overrides = frozenset({"epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs",
                           "lr_update"})
    # defaults: the CIFAR values (_SMALL) and their RandAugment; the large benchmarks take _LARGE (hparams)
    settings = (
        Setting("ce_weight", 2.0, "weight of the logit-compensated CE (their alpha)", "loss", low=0),
        Setting("scl_weight", 0.6, "weight of the balanced contrastive loss (their beta)", "loss", low=0),
        Setting("temperature", 0.1, "temperature T of the contrastive loss", "loss", low=0, low_open=True),
        replace(TAU, help="logit compensation: the CE sees s z + tau log(prior) (1: balanced softmax)"),
        Setting("cosine", True, "a cosine classifier (logits scaled by logit_scale) instead of a linear one",
                "classifier"),
        Setting("logit_scale", 30.0, "s, the scale of the cosine logits", "classifier", low=0, low_open=True),
        Setting("proj_hidden", 512, "hidden width of the projection heads (0: the backbone's feature size)",
                "contrastive", low=0),
        Setting("proj_dim", 128, "size of the contrastive embeddings and class prototypes", "contrastive", low=1),
        Setting("crop_min_scale", 0.08, "the smallest area fraction of the contrastive views' random resized crop",
                "contrastive", low=0, high=1, low_open=True),
        Setting("randaug_n", 2, "their RandAugment of the classification view: ops per image (0: none)",
                "augmentation", low=0),
        Setting("randaug_m", 10.0, "their RandAugment: the magnitude, of timm's 10", "augmentation", low=0, high=10),
        Setting("randaug_mstd", 0.5, "their RandAugment: the standard deviation of the magnitude's noise",
                "augmentation", low=0),
    )

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        own = dict(_LARGE if family in ("imagenet_lt", "inat2018", "places_lt") else _SMALL)
        own.update({"tau": 1.0, "cosine": True, "logit_scale": 30.0, "crop_min_scale": 0.08})
        engine: dict[str, Any] = dict(_ENGINE.get(family, {})) if recipe == "paper" else {}
        if engine:
            engine["lr_update"] = "epoch"
        if recipe == "paper" and family != "digits":
            own.update(RANDAUG)  # their RandAugment on the classification view (not on 8x8 digits)
        return {**engine, **own}

    def check(self, stage: str, hp: dict[str, Any]) -> list[str]:
        problems = []
        if hp.get("randaug_n", 0) > 0 and hp.get("autoaugment", "none") != "none":
            problems.append(f"{stage}.autoaugment={hp['autoaugment']!r}: bcl applies its own RandAugment "
                            f"(randaug_n={hp['randaug_n']}); set {stage}.autoaugment=none or {stage}.randaug_n=0")
        if hp.get("mix", "none") != "none" or hp.get("label_smoothing", 0) > 0 or hp.get("reweight", "none") != "none":
            problems.append(f"{stage}: bcl's contrastive term needs the whole batch with its true labels; set "
                            f"{stage}.mix=none, {stage}.label_smoothing=0 and {stage}.reweight=none")
        return problems

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        hp = ctx.hp
        if hp["cosine"] and not isinstance(model.classifier, NormedLinear):
            old = model.classifier
            model.classifier = NormedLinear(old.in_features, old.out_features).to(old.weight.device)
        d = model.classifier.weight.shape[1]
        hidden = hp["proj_hidden"] or d
        if not hasattr(model, "bcl_head"):  # prepare runs again on resume, on a fresh model
            model.bcl_head = mlp(d, hidden, hp["proj_dim"]).to(ctx.device)
            model.bcl_proto = mlp(d, hidden, hp["proj_dim"]).to(ctx.device)
            model.features.register_forward_hook(self._tap)
        self._features: torch.Tensor | None = None
        self._capture = False
        ctx.state["log_prior"] = log_prior(ctx.class_counts).to(ctx.device)
        ctx.state.setdefault("view_step", [0, 0])  # (epoch, step) of the next batch's views
        self._stats = splits_stats(ctx.splits)

    def _tap(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self._capture:
            self._features = output

    def _next_generator(self, ctx: StageContext) -> torch.Generator:
        epoch, step = ctx.state["view_step"]
        step = step if epoch == ctx.epoch else 0  # a new epoch (or a resumed run) starts at step 0
        ctx.state["view_step"] = [ctx.epoch, step + 1]
        return view_generator(ctx.seed, ctx.epoch, step)

    def forward(self, net: torch.nn.Module, x: torch.Tensor, ctx: StageContext) -> Any:
        """The classification view's logits, the 2N unit embeddings of the two contrastive views and
        the C unit class prototypes. One pass of the backbone over the 3N images (through ``net``, so
        DDP and compilation apply); the features come from a hook on ``model.features``."""
        n = x.shape[0]
        gen = self._next_generator(ctx)
        v1, v2 = contrastive_views(x, *self._stats, gen, ctx.hp["crop_min_scale"])
        if ctx.hp.get("randaug_n", 0) > 0:  # the classification view, after the contrastive views' draws
            x = randaug_view(x, *self._stats, gen, ctx.hp)
        self._capture = True
        try:
            logits = net(to_memory_format(torch.cat([x, v1, v2]), x.device))
        finally:
            self._capture = False
        feats, self._features = self._features, None
        model = _unwrap(net)
        z = F.normalize(model.bcl_head(feats)[n:], dim=1)
        protos = F.normalize(model.bcl_proto(model.classifier.weight), dim=1)
        return logits[:n], z, protos

    def logits(self, out: Any) -> torch.Tensor:
        return out[0]

    def loss(self, out: Any, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        logits, z, protos = (t.float() for t in out)
        hp = ctx.hp
        scale = hp["logit_scale"] if hp["cosine"] else 1.0
        ce = compensated_ce(logits, targets, ctx.state["log_prior"], scale, hp["tau"])
        scl = balanced_contrastive_loss(z, targets, protos, hp["temperature"])
        return hp["ce_weight"] * ce + hp["scl_weight"] * scl


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The LTModel inside a compiled and/or DDP-wrapped module."""
    net = getattr(net, "_orig_mod", net)
    return getattr(net, "module", net)
