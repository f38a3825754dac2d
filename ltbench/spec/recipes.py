"""Named training recipes: the common training protocol of one paper or code base, per benchmark
family. A run's hyperparameters come from the method's defaults, then the recipe, then --set; the
origin of every value is recorded in spec.json.

Milestones of the step schedule are fractions of the stage's epochs, so --epochs scales them.
"""

from __future__ import annotations

from typing import Any

from ..errors import LtbenchError

# The engine's settings (defaults, allowed values, help) are declared in ltbench.spec.schema; a recipe
# gives values per benchmark family, which replace those defaults.

# The tuned stage-1 weight decay of weight balancing per benchmark family (REFERENCE.md section 1:
# the authors' code uses 5e-3 on CIFAR-100-LT IR100). digits: chosen on digits-LT's validation split
# (3 seeds) over {0, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2}: stage-1 CE val class-mean was
# 91.0 / 90.7 / 89.8 / 90.3 / 89.5 / 87.2 / 78.8 / 59.5, and WB's final val was flat (92.3..93.7) over
# 0..5e-3. Weight decay does not help this tiny benchmark's stage 1; the best value is 0.
# imagenet_lt 5e-4 and inat2018 1e-4: inside the ranges WB sweeps (ImageNet-LT about 1e-4..1e-2, iNat
# about 1e-6..1e-4; REFERENCE.md section 1) and the values of Kang et al.'s configs; not yet re-tuned
# on validation here. places_lt has none (WB does not cover it): decoupled methods keep the recipe's.
TUNED_WEIGHT_DECAY: dict[str, float] = {"cifar": 5e-3, "digits": 0.0, "imagenet_lt": 5e-4, "inat2018": 1e-4}

# recipe -> benchmark family -> {"stage": {...}, "data": {...}, "backbone": name}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        # WB paper, stage 1: SGD 0.9, lr 0.01 cosine, batch 64, 200 epochs (WD comes from the method).
        "cifar": {"stage": {"epochs": 200, "batch_size": 64, "lr": 0.01, "schedule": "cosine", "weight_decay": 5e-4}},
        "digits": {"stage": {"epochs": 40, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "weight_decay": 5e-4}},
        # The large benchmarks: WB's shared protocol (batch 64, 512 on iNaturalist). The paper gives no
        # separate epoch count for them and the authors' public code covers CIFAR only, so the CIFAR
        # protocol's 200 epochs apply. WD of plain runs: Kang et al.'s (stage 1 of WB: TUNED_WEIGHT_DECAY).
        "imagenet_lt": {"stage": {"epochs": 200, "batch_size": 64, "lr": 0.01, "schedule": "cosine",
                                  "weight_decay": 5e-4}},
        "inat2018": {"stage": {"epochs": 200, "batch_size": 512, "lr": 0.01, "schedule": "cosine",
                               "weight_decay": 1e-4}},
        # Places-LT is not in WB; the same protocol, but 30 epochs as it fine-tunes a ResNet-152 from
        # ImageNet weights (OLTR / Kang et al.; pass them with --init-weights).
        "places_lt": {"stage": {"epochs": 30, "batch_size": 64, "lr": 0.01, "schedule": "cosine",
                                "weight_decay": 5e-4}},
    },
    "kang": {
        # Kang et al. 2020 (classifier-balancing configs, feat_uniform): batch 512, lr 0.2 cosine to 0,
        # 90 epochs (scale lr linearly with the batch). ImageNet-LT: ResNeXt-50, WD 5e-4; iNat: ResNet-50, WD 1e-4.
        "imagenet_lt": {"stage": {"epochs": 90, "batch_size": 512, "lr": 0.2, "schedule": "cosine",
                                  "weight_decay": 5e-4}, "backbone": "resnext50_32x4d"},
        "inat2018": {"stage": {"epochs": 90, "batch_size": 512, "lr": 0.2, "schedule": "cosine",
                               "weight_decay": 1e-4}, "backbone": "resnet50"},
        # Places-LT stage 1 (OLTR's config, which Kang et al. start from): ResNet-152 from ImageNet weights
        # (--init-weights), batch 128, 30 epochs, WD 5e-4. OLTR uses lr 0.001 for the backbone and 0.1 for
        # the classifier with x0.1 every 10 epochs; the engine has one lr, so 0.01 with cosine decay.
        "places_lt": {"stage": {"epochs": 30, "batch_size": 128, "lr": 0.01, "schedule": "cosine",
                                "weight_decay": 5e-4}, "backbone": "resnet152"},
    },
    "cao": {
        # Cao et al. 2019 (LDAM-DRW code): lr 0.1, batch 128, WD 2e-4, 5 warm-up epochs, x0.01 at 160 and 180 of 200.
        "cifar": {"stage": {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 2e-4, "schedule": "step",
                            "warmup_epochs": 5, "milestones": [0.8, 0.9], "gamma": 0.01}},
    },
    "official": {
        # The WB authors' public code, each difference from the paper a setting (REFERENCE.md section 1):
        # ResNet-34 with a CIFAR stem, 320 epochs, first-n_i subset, checkpoint chosen on the test set,
        # cosine stepped once per epoch at its start, fp32, the code's CIFAR mean/std (0.4914, 0.4822, 0.4465) /
        # (0.2023, 0.1994, 0.2010) also for CIFAR-100 (data.normalization=wb_code), and the flip-averaged test
        # accuracy reported. Their stage 2 (augmented input through the backbone left in
        # train mode) and tau-norm (fixed tau, bias kept) are the methods' settings under this recipe.
        "cifar": {"stage": {"epochs": 320, "batch_size": 64, "lr": 0.01, "schedule": "cosine", "weight_decay": 5e-4,
                            "select": "test", "lr_update": "epoch", "precision": "fp32"},
                  "data": {"subset": "first", "normalization": "wb_code", "report": "test_flip_avg"},
                  "backbone": "resnet34_cifar"},
    },
    # LIFT (Shi et al., ICML 2024), their configs/model/clip_vit_b16.yaml and scripts/run_tab1to4_main_results.sh:
    # CLIP ViT-B/16, SGD momentum 0.9, lr 0.01, weight decay 5e-4, batch 128, 10 epochs (20 on iNaturalist),
    # CosineAnnealingLR stepped after each epoch (lr_update=epoch_start), no warm-up, the last epoch's model
    # reported (no selection). The method `lift` adds its own (AdaptFormer, cosine head, LA loss); any other
    # method under --recipe lift trains with this protocol. digits-LT: the same protocol, for the code path.
    "lift": {family: {"stage": {"epochs": 20 if family == "inat2018" else 10, "batch_size": 128, "lr": 0.01,
                                "weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 0,
                                "lr_update": "epoch_start", "select": "last"}, "backbone": "clip_vit_b16"}
             for family in ("cifar", "imagenet_lt", "inat2018", "places_lt", "digits")},
}


# Kang et al.'s stage 2 (cRT and LWS) per benchmark family, from facebookresearch/classifier-balancing:
# config/ImageNet_LT/cls_crt.yaml, cls_lws.yaml; config/iNaturalist18/cls_crt.yaml, cls_lws.yaml;
# config/Places_LT/cls_crt.yaml, cls_lws.yaml. Every config: SGD momentum 0.9, cosine to 0 (coslr, endlr 0)
# stepped once at each epoch's start (lr_update=epoch), ClassAwareSampler with num_samples_cls 4, the
# train transform (augmented images) through the frozen backbone, which their loop leaves in train()
# mode: BatchNorm normalises with batch statistics and updates its running ones (frozen_bn=train).
# lr 0.2 at batch 512; Places-LT's configs say lr 0.1 at batch 256, the same lr per image, so lr is
# stated for batch 512 and scaled linearly with the batch (a smaller --set batch_size scales it too).
# Their epoch: int(len(train) / batch_size) steps (the engine's: len(train) draws, a last partial batch
# kept); their sampler's cycles run on across epochs (the engine's restart from each epoch's seed).
KANG_STAGE2_SHARED: dict[str, Any] = {
    "lr": 0.2, "lr_scaling": "linear", "base_batch": 512, "schedule": "cosine", "warmup_epochs": 0,
    "lr_update": "epoch", "augment": True, "frozen_bn": "train", "sampler": "class_aware",
}
# family -> method -> the values that differ per benchmark and method
KANG_STAGE2: dict[str, dict[str, dict[str, Any]]] = {
    "imagenet_lt": {"crt": {"epochs": 10, "batch_size": 512, "weight_decay": 5e-4},
                    "lws": {"epochs": 5, "batch_size": 512, "weight_decay": 5e-4}},
    "inat2018": {"crt": {"epochs": 30, "batch_size": 512, "weight_decay": 1e-4},
                 "lws": {"epochs": 5, "batch_size": 512, "weight_decay": 1e-4}},
    "places_lt": {"crt": {"epochs": 10, "batch_size": 256, "weight_decay": 5e-4},
                  "lws": {"epochs": 5, "batch_size": 256, "weight_decay": 5e-4}},
}


def kang_stage2(method: str, family: str) -> dict[str, Any]:
    """The stage-2 values of Kang et al.'s configs for ``method`` on ``family``; empty where their
    code has none (another method, or a benchmark family outside their configs)."""
    own = KANG_STAGE2.get(family, {}).get(method)
    return {**KANG_STAGE2_SHARED, **own} if own is not None else {}


def recipe_for(recipe: str, family: str, benchmark: str) -> dict[str, Any]:
    if recipe not in RECIPES:
        raise LtbenchError(f"unknown recipe {recipe!r}; known recipes: {', '.join(sorted(RECIPES))}.")
    table = RECIPES[recipe]
    if family not in table:
        have = sorted(r for r, t in RECIPES.items() if family in t)
        raise LtbenchError(
            f"recipe {recipe!r} has no settings for benchmark {benchmark!r}; "
            f"recipes that do: {', '.join(have) or 'none'} (pick one with --recipe)."
        )
    return table[family]
