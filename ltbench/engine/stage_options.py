"""Stage options that any method can switch on, owned by the engine (declared in ltbench.spec.schema:
the groups mixing, re-weighting, sampling and maxnorm), each off by default and then costing nothing in the training loop.

- ``mix`` = mixup | cutmix (``mix_alpha``): the algorithms of torchvision.transforms.v2.MixUp / CutMix.
  The partner of image i is image i-1 of the batch (the batch rolled by one), lam ~ Beta(alpha, alpha);
  mixup: x <- lam x + (1 - lam) x_partner; cutmix: a box of area (1 - lam) H W centred at a uniform
  pixel, clipped to the image, takes the partner's pixels and lam becomes 1 - box area / (H W). The loss is
  lam * loss(out, y) + (1 - lam) * loss(out, y_partner) with the method's loss.
- ``label_smoothing`` = eps: (1 - eps) loss(out, y) + eps mean_k loss(out, k), the expected loss under
  the smoothed label distribution (for cross-entropy: torch's ``label_smoothing``).
- ``reweight`` = cb (``reweight_beta``) from epoch round(``reweight_from`` x epochs) (0.8: Cao et al.'s
  DRW): the class-weighted mean sum_c w_c n_c L_c / sum_c w_c n_c over the classes c in the batch, with
  n_c its images of class c, L_c the method's loss on them and w_c Cui et al.'s class-balanced weight
  (for cross-entropy: ``F.cross_entropy(weight=w)``).
- ``resample_from``: instance-balanced sampling before epoch round(resample_from x epochs), the
  stage's ``sampler`` from then on (Cao et al.'s DRS).
- ``autoaugment`` = autoaugment | randaugment: torchvision's policies per image (ltbench.data.splits, ltbench.data.images).
- ``maxnorm`` (``threshold``, ``maxnorm_every``): every class row of ``model.classifier.weight`` is
  projected onto the ball of radius min_k ||w_k|| + threshold (max_k ||w_k|| - min_k ||w_k||), the
  norms taken from the classifier as the stage starts (weight balancing's MaxNorm, Alshammari et al. 2022).

Every random draw comes from the epoch's generator (ltbench.data.splits.per_epoch_generator), so a resumed
run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data.autoaugment import describe_policy
from ..errors import LtbenchError
from ..method import Method, StageContext

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def switch_epoch(fraction: float, epochs: int) -> int:
    """The 0-based epoch from which a scheduled option (re-weighting, re-sampling) applies:
    round(fraction x epochs), as LDAM-DRW's ``drw_start`` (160 of 200 epochs for 0.8)."""
    return int(round(fraction * epochs))


# ----------------------------------------------------------------------------------------- MaxNorm


@torch.no_grad()
def maxnorm_(weight: torch.Tensor, radius: torch.Tensor | float) -> None:
    """Project each row of ``weight`` onto the L2 ball of ``radius`` (in place): w <- w min(1, r/||w||)."""
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.clamp(radius / norms.clamp_min(1e-12), max=1.0))


def maxnorm_radius(weight: torch.Tensor, t: float) -> float:
    """min_k ||w_k|| + t (max_k ||w_k|| - min_k ||w_k||) over the rows of ``weight`` (a float: no host
    sync per projection)."""
    norms = weight.detach().float().norm(dim=1)
    return float(norms.min() + t * (norms.max() - norms.min()))


def classifier_weight(model: torch.nn.Module, stage: str) -> torch.Tensor:
    """``model.classifier.weight``, the (C, D) class rows MaxNorm constrains; a clear error without it."""
    weight = getattr(getattr(model, "classifier", None), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise LtbenchError(f"{stage}.maxnorm=true: this model's classifier has no (classes x features) weight "
                           f"(model.classifier.weight) to constrain; drop --set {stage}.maxnorm=true.")
    return weight


@dataclass(frozen=True)
class MaxNorm:
    """The projection of one stage: ``radius`` taken as the stage started, applied every ``every``."""

    radius: float
    every: str  # step | epoch

    def project(self, model: torch.nn.Module) -> None:
        maxnorm_(model.classifier.weight, self.radius)


# ----------------------------------------------------------------------------------------- losses


def class_balanced_weights(counts: list[int], beta: float) -> torch.Tensor:
    """Cui et al.'s w_c = (1 - beta) / (1 - beta^n_c), scaled to sum to C (0 for a class without images);
    also the cb, wb, ldam_drw and cb_focal methods' weights (ltbench.methods.cb.cb_weights)."""
    n = torch.tensor(counts, dtype=torch.float64)
    w = torch.ones_like(n) if beta == 0 else (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    w = torch.where(n > 0, w, torch.zeros_like(w))
    return (w * len(counts) / w.sum()).float()


def class_mean_loss(loss: LossFn, out: Any, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """mean_k loss(out, k) over k = 0..C-1, every sample labelled k: one call per class, vectorised with
    torch.vmap in chunks (about 2^22 logits at a time); a plain loop over the classes for a loss that
    vmap cannot run. Exact for any loss."""
    targets = torch.arange(num_classes, device=device)[:, None].expand(num_classes, n)
    chunk = max(1, 2**22 // max(n * num_classes, 1))
    try:
        per_class = torch.vmap(lambda t: loss(out, t), chunk_size=chunk)(targets)
    except (RuntimeError, NotImplementedError, ValueError):
        per_class = torch.stack([loss(out, t) for t in targets])
    return per_class.mean()


def smoothed_loss(loss: LossFn, out: Any, y: torch.Tensor, eps: float, num_classes: int) -> torch.Tensor:
    """(1 - eps) loss(out, y) + eps mean_k loss(out, k): the expected loss under the label distribution
    (1 - eps) onehot(y) + eps / C (Szegedy et al. 2016)."""
    return (1 - eps) * loss(out, y) + eps * class_mean_loss(loss, out, len(y), num_classes, y.device)


def take(out: Any, idx: torch.Tensor, n: int) -> Any:
    """The samples ``idx`` of what a method's forward returned: every tensor in it whose first dimension
    is the batch (``n``), in tuples, lists and dicts; anything else as it is."""
    if isinstance(out, torch.Tensor):
        return out[idx] if out.ndim and out.shape[0] == n else out
    if isinstance(out, dict):
        return {k: take(v, idx, n) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(take(v, idx, n) for v in out)
    return out


def reweighted_loss(loss: LossFn, out: Any, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_c w_c n_c L_c / sum_c w_c n_c over the classes c in the batch, L_c = loss on the n_c samples of
    class c: one loss call per class present (the group sizes cost one host sync per step)."""
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=len(weights))
    total, norm, start = 0.0, 0.0, 0
    for c, n_c in enumerate(counts.tolist()):
        if n_c:
            idx = order[start:start + n_c]
            total = total + weights[c] * n_c * loss(take(out, idx, len(y)), y[idx])
            norm = norm + weights[c] * n_c
            start += n_c
    return total / norm


def cross_entropy_loss(out: torch.Tensor, y: torch.Tensor, eps: float, weights: torch.Tensor | None) -> torch.Tensor:
    """The same numbers as the composed options for plain cross-entropy, with no host sync: the per-sample
    smoothed CE (1 - eps) CE_i + eps mean_k (-log p_ik) weighted by w_{y_i}: sum_i w_{y_i} s_i / sum_i w_{y_i}."""
    if weights is None:
        return F.cross_entropy(out, y, label_smoothing=eps)
    w = weights[y]
    return (F.cross_entropy(out, y, reduction="none", label_smoothing=eps) * w).sum() / w.sum()


def stage_loss(method: Method, ctx: StageContext, weights: torch.Tensor | None) -> LossFn:
    """The loss of a step: the method's, with label smoothing (``ctx.hp['label_smoothing']``) and, when
    ``weights`` is given, class re-weighting composed around it (re-weighting outermost: each sample's
    smoothed loss counts with its class's weight). Plain cross-entropy (a method that keeps
    Method.loss) takes ``cross_entropy_loss``, the same numbers without a host sync."""
    eps = float(ctx.hp.get("label_smoothing", 0.0))

    def base(out: Any, t: torch.Tensor) -> torch.Tensor:
        return method.loss(out, t, ctx)

    if eps == 0 and weights is None:
        return base
    if type(method).loss is Method.loss:
        return lambda out, t: cross_entropy_loss(out, t, eps, weights)
    per_class = base if eps == 0 else (lambda out, t: smoothed_loss(base, out, t, eps, ctx.num_classes))
    if weights is None:
        return per_class
    return lambda out, t: reweighted_loss(per_class, out, t, weights)


# ----------------------------------------------------------------------------------------- mixing


def cutmix_box(lam: float, u: tuple[float, float], h: int, w: int) -> tuple[tuple[int, int, int, int], float]:
    """torchvision's CutMix box (x1, y1, x2, y2) for a drawn ``lam`` and a centre drawn uniformly among the
    pixels (``u``: two uniforms in [0, 1) for its column and row), and lam corrected to the box's true
    area: half sides int(r W), int(r H) with r = sqrt(1 - lam) / 2, clipped to the image;
    lam' = 1 - (x2 - x1)(y2 - y1) / (H W)."""
    cx, cy = min(int(u[0] * w), w - 1), min(int(u[1] * h), h - 1)
    r = 0.5 * (1.0 - lam) ** 0.5
    hw, hh = int(r * w), int(r * h)
    x1, y1, x2, y2 = max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, w), min(cy + hh, h)
    return (x1, y1, x2, y2), 1.0 - (x2 - x1) * (y2 - y1) / (w * h)


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """torch's global CPU generator seeded with ``seed`` inside the block, restored after it (so that
    torchvision's transforms, which draw from it, draw from the epoch's generator; CUDA generators are
    left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


@dataclass
class Mixer:
    """One epoch of mixup or cutmix. ``draw`` takes every lam (and cutmix's box centres) of the epoch at
    once, from one seed drawn from the epoch generator; ``mix`` mixes step i's batch and labels it
    with (y, y_partner) pairs; ``loss`` and ``hits`` read those pairs with that step's lam."""

    mode: str
    lams: list[float]
    centres: list[tuple[float, float]]
    lam: float = 1.0  # the current step's (after cutmix's correction)

    @staticmethod
    def draw(mode: str, alpha: float, gen: torch.Generator, steps: int) -> Mixer:
        """lam_i ~ Beta(alpha, alpha) with torch.distributions.Beta (torchvision's sampler) and the cutmix
        centres, under torch's global generator seeded from ``gen``."""
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with seeded_global_rng(seed):
            lams = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((steps,))
            centres = torch.rand(steps, 2, dtype=torch.float64)
        return Mixer(mode, lams.tolist(), [tuple(c) for c in centres.tolist()])

    def mix(self, i: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step i's mixed inputs and its (n, 2) labels: each sample's own and its partner's (sample i - 1)."""
        lam = self.lams[i % len(self.lams)]
        if self.mode == "mixup":
            out = x.roll(1, 0).mul_(1.0 - lam).add_(x, alpha=lam)
        else:
            if x.ndim != 4:
                raise LtbenchError(f"mix=cutmix needs images (N, C, H, W), but this stage trains on inputs of shape "
                                   f"{tuple(x.shape)} (cached features?); use mix=mixup or cache_features=false.")
            (x1, y1, x2, y2), lam = cutmix_box(lam, self.centres[i % len(self.centres)], x.shape[2], x.shape[3])
            out = x.clone()
            out[..., y1:y2, x1:x2] = x[..., y1:y2, x1:x2].roll(1, 0)
        self.lam = lam
        return out, torch.stack((y, y.roll(1, 0)), 1)

    def loss(self, loss: LossFn, out: Any, pairs: torch.Tensor) -> torch.Tensor:
        """lam loss(out, y) + (1 - lam) loss(out, y_partner)."""
        return self.lam * loss(out, pairs[:, 0]) + (1.0 - self.lam) * loss(out, pairs[:, 1])

    def hits(self, logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The training accuracy's count under mixing: lam [argmax = y] + (1 - lam) [argmax = y_partner],
        summed over the batch (each sample scores against its mixed label)."""
        pred = logits.argmax(1)
        return self.lam * (pred == pairs[:, 0]).sum() + (1.0 - self.lam) * (pred == pairs[:, 1]).sum()


# ----------------------------------------------------------------------------------------- a stage


@dataclass
class StageOptions:
    """The options of one stage, resolved once as the stage starts (``start``): the settings come from the
    stage's spec (``ctx.hp``); what they derive from the model and the data (MaxNorm's radius from the
    classifier now, the class weights, the epochs from which re-weighting and re-sampling apply) is
    computed here, once. ``epoch`` gives each epoch's; ``record`` is what result.json says of them."""

    method: Method | None
    ctx: StageContext
    radius: float | None  # MaxNorm's, when the stage holds its settings (whether or not it projects)
    maxnorm: MaxNorm | None  # None: maxnorm=false
    weights: torch.Tensor | None  # re-weighting's class weights on the device (None: reweight=none)
    reweight_epoch: int | None  # 0-based first epoch of re-weighting
    resample_epoch: int | None  # 0-based first epoch of the stage's sampler (before it: instance-balanced)

    @staticmethod
    def start(method: Method | None, ctx: StageContext, model: torch.nn.Module) -> StageOptions:
        hp = ctx.hp
        radius = maxnorm_radius(classifier_weight(model, ctx.stage), hp.threshold) if "threshold" in hp else None
        maxnorm = MaxNorm(radius, hp.maxnorm_every) if hp.maxnorm else None
        weights = reweight_epoch = resample_epoch = None
        if hp.reweight != "none":
            weights = class_balanced_weights(ctx.class_counts, hp.reweight_beta).to(ctx.device)
            reweight_epoch = switch_epoch(hp.reweight_from, hp.epochs)
        if hp.resample_from and hp.sampler != "instance":
            resample_epoch = switch_epoch(hp.resample_from, hp.epochs)
        return StageOptions(method, ctx, radius, maxnorm, weights, reweight_epoch, resample_epoch)

    def record(self) -> dict[str, Any]:
        """What result.json records of the options the stage switches on (empty when none is on): MaxNorm's
        radius, the mixing, the smoothing, the class weights and the epochs (1-based) from which
        re-weighting and the stage's sampler apply."""
        hp, out = self.ctx.hp, {}
        if self.maxnorm is not None:
            out["maxnorm"] = {"radius": self.maxnorm.radius, "threshold": hp.threshold, "every": self.maxnorm.every}
        if hp.mix != "none":
            out["mix"] = {"mode": hp.mix, "alpha": hp.mix_alpha, "partner": "the batch rolled by one",
                          "train_acc": "lam-weighted: lam [pred = y] + (1 - lam) [pred = y_partner]"}
        if hp.label_smoothing:
            out["label_smoothing"] = hp.label_smoothing
        if self.weights is not None:
            out["reweight"] = {"kind": hp.reweight, "beta": hp.reweight_beta, "from_epoch": self.reweight_epoch + 1,
                               "weights": self.weights.cpu().tolist()}
        if self.resample_epoch is not None:
            out["resample"] = {"before": "instance", "sampler": hp.sampler, "from_epoch": self.resample_epoch + 1}
        if hp.autoaugment != "none":
            out["autoaugment"] = {"name": hp.autoaugment, "policy": describe_policy(hp.autoaugment, self.ctx.splits)}
        return out

    def epoch(self, epoch: int, gen: torch.Generator, steps: int) -> EpochOptions:
        """Epoch ``epoch``'s options; with mixing on, the mixer's seed is the first draw from ``gen``."""
        hp = self.ctx.hp
        reweight = self.weights is not None and epoch >= self.reweight_epoch
        sampler = hp.sampler if self.resample_epoch is None or epoch >= self.resample_epoch else "instance"
        mixer = Mixer.draw(hp.mix, hp.mix_alpha, gen, max(steps, 1)) if hp.mix != "none" else None
        data = {"autoaugment": hp.autoaugment} if hp.autoaugment != "none" else {}
        if self.method is None:
            raise ValueError("StageOptions.epoch needs the stage's method (for its loss)")
        loss = stage_loss(self.method, self.ctx, self.weights if reweight else None)
        return EpochOptions(sampler, loss, mixer, data, self.maxnorm)


def stage_record(model: torch.nn.Module, ctx: StageContext) -> dict[str, Any]:
    """What result.json records of a stage's options, taken from ``model`` as it is now (StageOptions.record)."""
    return StageOptions.start(None, ctx, model).record()


@dataclass
class EpochOptions:
    """What one epoch of a stage uses: its sampler, its loss, the mixer (None: no mixing), the extra
    arguments of ``train_batches`` and the MaxNorm projection (None: off)."""

    sampler: str
    loss: LossFn
    mixer: Mixer | None
    data_options: dict[str, Any]
    maxnorm: MaxNorm | None
