"""SADE (Zhang et al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed
Recognition", NeurIPS 2022), as in the authors' code (Vanint/SADE-AgnosticLT: model/loss.py
``DiverseExpertLoss``, test_training_cifar.py, configs/*.json).

Training: three experts of a multi-expert backbone (ltbench.models.experts) with expert logits z_1, z_2, z_3
and training prior pi (pi_c = n_c / n; the code adds 1e-9 inside each log):

    loss = CE(z_1, y) + CE(z_2 + log pi, y) + CE(z_3 + log pi - lam log pi_rev, y)

(forward expert: plain softmax; uniform expert: balanced softmax; backward expert: inverse softmax).
pi_rev is pi with its values reversed in rank order: the class with the k-th largest prior gets the
k-th smallest prior value. lam = 2 on CIFAR-100-LT and ImageNet-LT, 1 on iNaturalist 2018 (their
configs' ``tau``). The three losses are summed, as in their code.

Test time (``finalize``): the aggregation weights a = softmax(w) (w initialised to 1/3 each) are
learned on the UNLABELLED test images by maximising prediction stability between two augmented views:
loss = -mean_i cos(softmax(sum_k a_k z_k(v1_i)), softmax(sum_k a_k z_k(v2_i))), SGD (lr, momentum 0.9,
Nesterov, weight decay 5e-4; 2e-4 on iNaturalist 2018 and 4e-4 on Places-LT, their test_time_*.json) on
w only, batch 128, 5 epochs, stopping after an epoch once any a_k rounded to 2 decimals (their
``np.round(a_k, decimals=2)``, half to even) is below 0.05: a_k < 0.045, and 0.045 itself. The
experts are frozen in eval mode, so their logits of both views do not depend on a: each epoch computes them once (test images in file order) and then takes the SGD steps in a shuffled
order, as their shuffled loader does. Only the images of ``eval_batches`` reach this code: labels are
never read. The learned weights become the model's ``expert_weights`` (saved in model.pt), so the
final report (val and test) uses them; ``aggregation=mean`` keeps the plain mean of the experts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ltbench.data.images import crop_box
from ltbench.data.splits import crop_flip
from ltbench.engine.evaluation import exact_arithmetic
from ltbench.errors import LtbenchError
from ltbench.method import Method, Presentation, StageContext
from ltbench.models.experts import MULTI_EXPERT_VARIANT, MultiExpertModel
from ltbench.registry import methods
from ltbench.spec.schema import Setting

# Their training configs (configs/config_*_sade.json) under the default recipe, per benchmark family.
# CustomLR: linear warm-up over 5 epochs, then x gamma at step1 and again at step2.
SADE_PROTOCOL: dict[str, dict[str, Any]] = {
    "cifar": {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "nesterov": True,
              "schedule": "step", "milestones": [0.8, 0.9], "gamma": 0.1, "warmup_epochs": 5},
    "imagenet_lt": {"epochs": 180, "batch_size": 64, "lr": 0.025, "weight_decay": 5e-4, "nesterov": True,
                    "schedule": "cosine", "warmup_epochs": 0},
    "inat2018": {"epochs": 100, "batch_size": 512, "lr": 0.2, "weight_decay": 2e-4, "nesterov": True,
                 "schedule": "step", "milestones": [0.6, 0.8], "gamma": 0.1, "warmup_epochs": 5},
}
LAMBDA = {"inat2018": 1.0, "places_lt": 1.0}  # 2 elsewhere (CIFAR, ImageNet-LT; digits takes CIFAR's)
TTA_LR = {"imagenet_lt": 0.025, "inat2018": 0.2, "places_lt": 0.01}  # test_time_*.json; CIFAR 0.1
TTA_WEIGHT_DECAY = {"inat2018": 2e-4, "places_lt": 4e-4}  # test_time_*.json; CIFAR and ImageNet-LT 5e-4
TTA_STOP_DECIMALS = 2  # their stopping rule compares the weights rounded to 2 decimals
TTA_RECORD = "learned on unlabelled test images (labels never read)"


def sade_priors(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log(pi + 1e-9), log(pi_rev + 1e-9)) of the training counts, pi_rev as ``inverse_prior``."""
    n = torch.tensor(counts, dtype=torch.float32)
    prior = n / n.sum()
    return (prior + 1e-9).log(), (inverse_prior(prior) + 1e-9).log()


def inverse_prior(prior: torch.Tensor) -> torch.Tensor:
    """The prior's values reversed in rank order (their ``inverse_prior``): sort ascending, and give
    the class of rank r the value of rank C - 1 - r."""
    values, order = torch.sort(prior)
    rank = torch.argsort(order)
    return values[prior.numel() - 1 - rank]


def sade_loss(z: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor, log_inverse: torch.Tensor,
              lam: float) -> torch.Tensor:
    """The sum of the three experts' losses (module docstring); ``z`` (N, 3, C)."""
    return (F.cross_entropy(z[:, 0], y) + F.cross_entropy(z[:, 1] + log_prior, y)
            + F.cross_entropy(z[:, 2] + log_prior - lam * log_inverse, y))


def stability_loss(w: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """-mean_i cos(softmax(sum_k a_k z1_ik), softmax(sum_k a_k z2_ik)), a = softmax(w); z (N, K, C)."""
    a = torch.softmax(w, 0)
    p1 = torch.softmax(torch.einsum("nkc,k->nc", z1, a), 1)
    p2 = torch.softmax(torch.einsum("nkc,k->nc", z2, a), 1)
    return -F.cosine_similarity(p1, p2, dim=1, eps=1e-6).mean()


@torch.no_grad()
def _view_logits(model: MultiExpertModel, images: Iterable[torch.Tensor], augment: Callable[..., Any],
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' logits (N, K, C) of two augmented views of every image, in float32."""
    out1, out2 = [], []
    for x in images:
        v1, v2 = augment(x, gen)
        out1.append(model(v1, experts=True).float())
        out2.append(model(v2, experts=True).float())
    return torch.cat(out1), torch.cat(out2)


def learn_aggregation(model: MultiExpertModel, images: Callable[[], Iterator[torch.Tensor]],
                      augment: Callable[..., Any], hp: dict[str, Any], gen: torch.Generator,
                      device: torch.device) -> tuple[torch.Tensor, dict[str, Any]]:
    """SADE's test-time self-supervised aggregation: the weights a = softmax(w) learned from
    ``images()`` (batches of images, nothing else) by SGD on ``stability_loss``; and its record."""
    was_training = model.training
    model.eval()
    w = torch.full((model.num_experts,), 1.0 / model.num_experts, device=device, requires_grad=True)
    opt = torch.optim.SGD([w], lr=hp["tta_lr"], momentum=0.9, nesterov=True, weight_decay=hp["tta_weight_decay"])
    history = []
    for _ in range(hp["tta_epochs"]):
        with exact_arithmetic(device):
            z1, z2 = _view_logits(model, images(), augment, gen)
        order = torch.randperm(len(z1), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(order), hp["tta_batch"]):
            b = order[start:start + hp["tta_batch"]]
            loss = stability_loss(w, z1[b], z2[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        a = torch.softmax(w.detach(), 0)
        history.append({"stability": -total / max(len(order), 1), "weights": a.cpu().tolist()})
        if stops(a, hp["tta_min_weight"], hp.get("tta_stop_decimals")):
            break  # their stopping rule: once an expert's (rounded) weight falls below 0.05
    model.train(was_training)
    return torch.softmax(w.detach(), 0), {"epochs_run": len(history), "history": history}


def stops(weights: torch.Tensor, min_weight: float, decimals: int | None) -> bool:
    """SADE's stopping rule after a test-time epoch: some weight, rounded to ``decimals`` (half to even,
    in float32, as their ``np.round`` of the softmax), is below ``min_weight``. ``decimals`` None (the spec
    of a run from before the rounding was matched) compares the weights as they are."""
    import numpy as np

    a = weights.detach().float().cpu().numpy()
    if decimals is not None:
        a = np.round(a, decimals=int(decimals))
    return bool((a < min_weight).any())


def _not_multi_expert(method: str, backbone: str, experts: int | None = None) -> str:
    variants = ", ".join(f"{k} -> --backbone {v}" for k, v in MULTI_EXPERT_VARIANT.items())
    return (f"method {method} trains a multi-expert backbone{f' with {experts} experts' if experts else ''}, and "
            f"this run's backbone {backbone} is not one; pass the multi-expert variant of the backbone ({variants}), "
            f"e.g. --backbone resnet32_3experts on CIFAR-LT (or leave --backbone out: {method} picks it).")


def multi_expert_problems(method: str, backbone: str) -> list[str]:
    """Before the run: a backbone that is none of the multi-expert ones (by name; plugins' end in 'experts')."""
    ok = backbone in MULTI_EXPERT_VARIANT.values() or backbone.endswith("experts")
    return [] if ok else [_not_multi_expert(method, backbone)]


def check_multi_expert(model: torch.nn.Module, method: str, experts: int | None = None) -> MultiExpertModel:
    """``model`` as a multi-expert model, or a clear error naming the backbone option."""
    if not isinstance(model, MultiExpertModel) or (experts is not None and model.num_experts != experts):
        raise LtbenchError(_not_multi_expert(method, getattr(model, "name", type(model).__name__), experts))
    return model


# --- the two augmented views of SADE's test-time training (their TwoCropsTransform of train_trsfm) ---

GRAY = (0.299, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (x * torch.tensor(GRAY, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, (maxc - b) / d - (maxc - g) / d,
                    torch.where(maxc == g, 2 + (maxc - r) / d - (maxc - b) / d, 4 + (maxc - g) / d - (maxc - r) / d))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return h, s, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    i = torch.floor(h * 6)
    f = h * 6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, 0) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], 0)
    return table.gather(1, i[None, None].expand(3, 1, *i.shape)).squeeze(1).permute(1, 0, 2, 3)


def _jitter(x: torch.Tensor, op: int, f: torch.Tensor) -> torch.Tensor:
    """One of ColorJitter's operations with per-image factors ``f`` (N,): 0 brightness, 1 contrast,
    2 saturation (factors around 1), 3 hue (a shift in [-0.1, 0.1]); saturation and hue need RGB."""
    k = f.view(-1, 1, 1, 1)
    if op == 0:
        return (x * k).clamp(0, 1)
    if op == 1:
        return (x * k + (1 - k) * _gray(x).mean((2, 3), keepdim=True)).clamp(0, 1)
    if x.shape[1] != 3:
        return x
    if op == 2:
        return (x * k + (1 - k) * _gray(x)).clamp(0, 1)
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((h + f.view(-1, 1, 1)) % 1.0, s, v)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (separable, replicate padding) with standard deviations ``sigma`` (N,);
    sigma 0 leaves an image as it is."""
    n, c, h, w = x.shape
    r = 6  # 3 sigma for sigma up to 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).to(x.dtype))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 2r+1)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    return F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c).view(n, c, h, w)


class TwoViews:
    """Their test-time view (train_trsfm): a random crop (CIFAR: 4-pixel zero padding; image files:
    RandomResizedCrop scale 0.2..1 of the centre-cropped test image), ColorJitter(0.4, 0.4, 0.4, 0.1)
    with p 0.8 (its four operations in a random order per image), grayscale with p 0.2, Gaussian blur
    sigma U(0.1, 2) with p ``blur_p`` (0.2 CIFAR, 0.5 ImageNet-LT), horizontal flip where the benchmark
    flips. Applied to normalised images (undone, augmented in [0, 1], normalised again), every draw
    from the generator; ``__call__`` returns two independent views of a batch."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int, flip: bool, blur_p: float):
        self.mean, self.std, self.padding, self.flip, self.blur_p = mean, std, padding, flip, blur_p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(x, gen), self.view(x, gen)

    def view(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        n = len(x)
        img = (x * s + m).clamp(0, 1)
        img = self._crop(img, gen)
        jitter = torch.rand(n, generator=gen) < 0.8
        factors = torch.stack([0.6 + 0.8 * torch.rand(n, generator=gen) for _ in range(3)]
                              + [-0.1 + 0.2 * torch.rand(n, generator=gen)])  # (4, N)
        order = torch.rand(n, 4, generator=gen).argsort(1)  # each image's order of the four operations
        for step in range(4):
            out = img
            for op in range(4):
                pick = (jitter & (order[:, step] == op)).to(x.device).view(-1, 1, 1, 1)
                out = torch.where(pick, _jitter(img, op, factors[op].to(x.device)), out)
            img = out
        gray = (torch.rand(n, generator=gen) < 0.2).to(x.device).view(-1, 1, 1, 1)
        img = torch.where(gray, _gray(img).expand_as(img), img)
        sigma = torch.where(torch.rand(n, generator=gen) < self.blur_p, 0.1 + 1.9 * torch.rand(n, generator=gen),
                            torch.zeros(n))
        img = _blur(img, sigma.to(x.device, img.dtype))
        if self.flip:
            mirror = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
            img = torch.where(mirror, img.flip(3), img)
        return (img - m) / s

    def _crop(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = img.shape
        if self.padding > 0:  # RandomCrop(size, padding) with zero padding in pixel space
            p = self.padding
            oy, ox = torch.randint(0, 2 * p + 1, (n,), generator=gen), torch.randint(0, 2 * p + 1, (n,), generator=gen)
            return crop_flip(img, p, oy.to(img.device), ox.to(img.device))
        out = []
        for i in range(n):  # RandomResizedCrop(scale 0.2..1, ratio 3/4..4/3) back to h x w
            top, left, ch, cw = crop_box(h, w, (0.2, 1.0), (3 / 4, 4 / 3), gen)
            out.append(F.interpolate(img[i:i + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                     antialias=True, align_corners=False))
        return torch.cat(out)


@methods.register()
class SADE(Method):
    name = "sade"
    presentation = Presentation(order=70, in_default_run=False)
    description = "three diverse experts + test-time self-supervised aggregation (Zhang et al. 2022)"
    overrides = frozenset({"epochs", "batch_size", "lr", "weight_decay", "nesterov", "schedule", "milestones",
                           "gamma", "warmup_epochs"})
    settings = (
        Setting("lam", 2.0, "lambda of the backward expert's inverse softmax: z_3 + log pi - lambda log pi_rev",
                "loss", low=0),
        Setting("aggregation", "self_supervised", "the experts' weights at test time: learned on the unlabelled "
                "test images (self_supervised) | the plain mean", "test-time", choices=("self_supervised", "mean")),
        Setting("tta_epochs", 5, "epochs of the test-time aggregation (0: the plain mean)", "test-time", low=0),
        Setting("tta_lr", 0.1, "SGD lr of the test-time aggregation weights", "test-time", low=0, low_open=True),
        Setting("tta_batch", 128, "test images per step of the test-time aggregation", "test-time", low=1),
        Setting("tta_weight_decay", 5e-4, "SGD weight decay of the test-time aggregation weights", "test-time",
                low=0),
        Setting("tta_min_weight", 0.05, "test-time training stops once an expert's weight is below this",
                "test-time", low=0, high=1),
        Setting("tta_stop_decimals", 2, "the weights are rounded to this many decimals before that comparison "
                "(their np.round)", "test-time", low=0),
    )

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        own: dict[str, Any] = {"lam": LAMBDA.get(family, 2.0), "aggregation": "self_supervised", "tta_epochs": 5,
                               "tta_lr": TTA_LR.get(family, 0.1), "tta_batch": 128,
                               "tta_weight_decay": TTA_WEIGHT_DECAY.get(family, 5e-4), "tta_min_weight": 0.05,
                               "tta_stop_decimals": TTA_STOP_DECIMALS}
        if recipe == "paper":  # the default recipe: their configs where their code covers the benchmark
            own.update(SADE_PROTOCOL.get(family, {}))
        return own

    def backbone_for(self, name: str) -> str:
        return MULTI_EXPERT_VARIANT.get(name, name)

    def backbone_problems(self, backbone: str) -> list[str]:
        return multi_expert_problems(self.name, backbone)

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        check_multi_expert(model, self.name, experts=3)
        log_prior, log_inverse = sade_priors(ctx.class_counts)
        ctx.state["log_prior"], ctx.state["log_inverse"] = log_prior.to(ctx.device), log_inverse.to(ctx.device)

    def forward(self, net: torch.nn.Module, x: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return net(x, experts=True)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return sade_loss(logits, targets, ctx.state["log_prior"], ctx.state["log_inverse"], ctx.hp["lam"])

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        model = check_multi_expert(model, self.name, experts=3)
        hp = ctx.hp
        if hp["aggregation"] == "mean" or hp["tta_epochs"] == 0:
            ctx.record["test_time_aggregation"] = "none: the mean of the experts' logits"
            return
        splits, device = ctx.splits, ctx.device

        def images() -> Iterator[torch.Tensor]:  # the test images only: the labels are dropped unread
            return (x for x, _ in splits.eval_batches("test", hp["tta_batch"], device))

        augment = TwoViews(splits.mean, splits.std, splits.augment.crop_padding, splits.augment.flip,
                           blur_p=0.2 if splits.augment.crop_padding > 0 else 0.5)
        gen = torch.Generator().manual_seed(ctx.seed + 7127)  # from the run's seed
        weights, info = learn_aggregation(model, images, augment, hp, gen, device)
        model.set_expert_weights(weights)
        ctx.record.update(test_time_aggregation=TTA_RECORD, expert_weights=weights.cpu().tolist(),
                          test_time_epochs_run=info["epochs_run"], test_time_history=info["history"],
                          test_time_note="the learned weights also aggregate the val predictions of the final report")

