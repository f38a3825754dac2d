"""Published numbers (top-1 %, class-mean on a balanced evaluation set), kept as data with their
sources, so that `ltbench table --reference` can put them beside ours.

Rows are keyed by the ltbench row they correspond to: a method name, or ``STAGE1`` for weight
balancing's stage 1 (CE with the tuned weight decay: the ``ce`` run that ``wb`` builds on). Rows that
no ltbench method reproduces (other protocols, other methods) carry a descriptive key and show "n/a"
on our side.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE1 = "wb stage 1 (ce + tuned WD)"

# The WB paper's five benchmarks: the default columns of `ltbench table`.
DEFAULT_COLUMNS = ["CIFAR-100-LT IR100", "CIFAR-100-LT IR50", "CIFAR-100-LT IR10", "ImageNet-LT", "iNaturalist 2018"]
# Further common columns, shown when records exist.
EXTRA_COLUMNS = ["CIFAR-10-LT IR100", "Places-LT"]


@dataclass(frozen=True)
class Published:
    row: str
    column: str
    all: float
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    source: str = ""
    # foundation-model rows: the backbone, what trained, epochs, trainable parameters (tables' notes show them)
    backbone: str = ""
    tuning: str = ""
    epochs: int | None = None
    trainable: int | None = None

    @property
    def setup(self) -> str:
        """"backbone clip_vit_b16, tuning adaptformer, 10 epochs, 0.18M trainable" ("" for the older rows)."""
        parts = [f"backbone {self.backbone}" if self.backbone else "", f"tuning {self.tuning}" if self.tuning else "",
                 f"{self.epochs} epochs" if self.epochs is not None else "",
                 f"{self.trainable / 1e6:.2f}M trainable" if self.trainable is not None else ""]
        return ", ".join(p for p in parts if p)


WB_T1 = "WB paper (Alshammari et al. 2022), Table 1"
WB_T2 = "WB paper, Table 2"
WB_T3 = "WB paper, Table 3"
KANG = "Kang et al. 2020 (stage 1: plain CE, ResNet-50), as reported in WB Table 3"
KANG_README = "Kang et al. 2020, classifier-balancing README (ResNeXt-50, 90 epochs; WB Table 3 quotes cRT few as 27.3)"
PLACES = "Kang et al. 2020 / common Places-LT tables (ResNet-152 from ImageNet weights)"
CAO = "Cao et al. 2019 (LDAM-DRW), CIFAR-10-LT IR100"
# The methods of issue 16 (each row: the authors' own protocol, which ltbench's recipes follow where the
# README says; backbone and epochs are in the source string).
CAO_T2 = "Cao et al. 2019, Table 2 (ResNet-32, 200 epochs)"
CUI = "Cui et al. 2019 (class-balanced focal, ResNet-32, 200 epochs; the best of their CB variants)"
CUI_INAT = "Cui et al. 2019, Table 3 (CB focal, ResNet-50, iNaturalist 2018)"
MISLAS = "MiSLAS repository README (Zhong et al. 2021), stage 2, CIFAR: ResNet-32, 200 + 10 epochs"
MISLAS_BIG = "MiSLAS repository README (Zhong et al. 2021), stage 2: ResNet-50 (ImageNet-LT 180, iNat 200 epochs); Places-LT ResNet-152"
MISLAS_S1 = "MiSLAS repository README, stage 1 (CE + mixup): CIFAR ResNet-32; ResNet-50; Places-LT ResNet-152"
DISALIGN = "DisAlign repository model zoo: ResNeXt-50, 90 + 10 epochs"
SADE = "SADE repository README (Zhang et al. 2022): CIFAR ResNet-32 200 ep., ImageNet-LT ResNeXt-50 180 ep., iNat ResNet-50 100 ep., Places-LT ResNet-152"
RIDE = ("RIDE repository MODEL_ZOO.md (Wang et al. 2021): 3 experts, no distillation, with its expert-assignment "
        "router (which ltbench's ride lacks); CIFAR ResNet-32, ImageNet-LT ResNeXt-50, iNat ResNet-50")
BCL = "Zhu et al. 2022 (BCL), ResNet-32, 200 epochs (paper table as read; paperswithcode lists 53.9 at IR100)"
BCL_BIG = "BCL repository README: ResNeXt-50, 90 epochs (SimCLR-style views)"
# LIFT's numbers as the Papers with Code archive (paperswithcode2.com/paper/393190) and sotaverified.org list them
# from the paper; the paper's own tables were not readable here, so they are not checked against it, nor is
# whether each includes test-time ensembling (their main-results script evaluates with tte after training).
LIFT_SRC = ("LIFT (Shi et al., ICML 2024, arXiv 2309.10019) as listed by Papers with Code and sotaverified.org; "
            "not checked against the paper's tables")
# Trainable parameters: their AdaptFormer modules at their default width (ltbench.models.peft.default_dim) plus
# the cosine head, counted as ltbench counts a run's (tests/test_lift.py recomputes them), not the paper's figures.
LIFT_B16, LIFT_L14, LIFT_IN21K = "clip_vit_b16", "clip_vit_l14", "vit_b16_in21k_ft_in1k"


def _cifar100(row: str, ir100: float, ir50: float, ir10: float, source: str = WB_T2) -> list[Published]:
    return [Published(row, f"CIFAR-100-LT IR{ir}", v, source=source)
            for ir, v in ((100, ir100), (50, ir50), (10, ir10))]


def _mmf(row: str, column: str, values: str, source: str) -> Published:
    many, medium, few, all_ = (float(v) for v in values.split("/"))
    return Published(row, column, all_, many, medium, few, source)


PUBLISHED: list[Published] = [
    *_cifar100("ce", 38.32, 43.85, 55.71),
    *_cifar100("cb", 39.60, 45.32, 57.99),
    *_cifar100("ldam_drw", 42.04, 46.62, 58.71),
    *_cifar100("logit_adj", 42.01, 47.03, 57.74),
    *_cifar100("tau-norm on a plain-CE backbone (Kang et al.)", 47.73, 52.53, 63.80),
    *_cifar100("PaCo (not in ltbench)", 52.00, 56.00, 64.20),
    *_cifar100("ce, WD 0 (WB's naive CE)", 38.38, 43.99, 57.31),
    *_cifar100(STAGE1, 46.08, 52.71, 66.03),
    *_cifar100("tau_norm", 51.31, 57.65, 67.79),
    *_cifar100("wb", 53.35, 57.71, 68.67),
    # Table 1 (CIFAR-100-LT IR100): many / medium / few / all. They refine the Table 2 entries above.
    _mmf("ce, WD 0 (WB's naive CE)", "CIFAR-100-LT IR100", "64.05/35.80/11.43/38.38", WB_T1),
    _mmf(STAGE1, "CIFAR-100-LT IR100", "76.94/44.28/12.17/46.08", WB_T1),
    _mmf("tau_norm", "CIFAR-100-LT IR100", "73.11/47.69/30.10/51.31", WB_T1),
    _mmf("wb without MaxNorm (stage2.maxnorm=false)", "CIFAR-100-LT IR100", "72.77/49.74/31.80/52.42", WB_T1),
    _mmf("wb", "CIFAR-100-LT IR100", "72.60/51.86/32.63/53.35", WB_T1),
    # Table 3: ImageNet-LT (ResNeXt-50) and iNaturalist 2018 (ResNet-50).
    _mmf("ce", "ImageNet-LT", "65.9/37.5/7.7/44.4", WB_T3),
    _mmf("cb", "ImageNet-LT", "39.6/32.7/16.8/33.2", WB_T3),
    _mmf("crt", "ImageNet-LT", "61.8/46.2/27.4/49.6", KANG_README),
    _mmf("tau_norm", "ImageNet-LT", "59.1/46.9/30.7/49.4", KANG_README),
    _mmf("lws", "ImageNet-LT", "60.2/47.2/30.3/49.9", KANG_README),
    _mmf(STAGE1, "ImageNet-LT", "68.5/42.4/14.2/48.6", WB_T3),
    _mmf("wb", "ImageNet-LT", "62.5/50.4/41.5/53.9", WB_T3),
    _mmf("ce", "iNaturalist 2018", "72.2/63.0/57.2/61.7", WB_T3),
    _mmf("cb", "iNaturalist 2018", "53.4/54.8/53.2/54.0", WB_T3),
    _mmf("crt", "iNaturalist 2018", "69.0/66.0/63.2/65.2", KANG),
    _mmf("tau_norm", "iNaturalist 2018", "65.6/65.3/65.5/65.6", KANG),
    _mmf("lws", "iNaturalist 2018", "65.0/66.3/65.5/65.9", KANG),
    _mmf(STAGE1, "iNaturalist 2018", "74.5/66.5/61.5/65.4", WB_T3),
    _mmf("wb", "iNaturalist 2018", "71.2/70.4/69.7/70.2", WB_T3),
    Published("ce", "Places-LT", 30.2, source=PLACES),
    _mmf("tau_norm", "Places-LT", "37.8/40.7/31.8/37.9", PLACES),
    _mmf("lws", "Places-LT", "40.6/39.1/28.6/37.6", PLACES),
    *_cifar100("focal", 38.41, 44.32, 55.78, source=CAO_T2),
    *_cifar100("cb_focal", 39.60, 45.32, 57.99, source=CUI),
    Published("cb_focal", "iNaturalist 2018", 61.12, source=CUI_INAT),
    *_cifar100("mislas", 47.0, 52.3, 63.2, source=MISLAS),
    Published("mislas", "ImageNet-LT", 52.7, source=MISLAS_BIG),
    Published("mislas", "iNaturalist 2018", 71.6, source=MISLAS_BIG),
    Published("mislas", "Places-LT", 40.4, source=MISLAS_BIG),
    Published("mislas", "CIFAR-10-LT IR100", 82.5, source=MISLAS),
    *_cifar100("mislas stage 1 (ce + mixup)", 39.5, 45.4, 59.1, source=MISLAS_S1),
    Published("mislas stage 1 (ce + mixup)", "ImageNet-LT", 45.5, source=MISLAS_S1),
    Published("mislas stage 1 (ce + mixup)", "iNaturalist 2018", 66.9, source=MISLAS_S1),
    Published("mislas stage 1 (ce + mixup)", "Places-LT", 29.4, source=MISLAS_S1),
    Published("mislas stage 1 (ce + mixup)", "CIFAR-10-LT IR100", 72.8, source=MISLAS_S1),
    _mmf("disalign", "ImageNet-LT", "61.44/50.53/33.68/52.44", DISALIGN),
    Published("sade", "CIFAR-100-LT IR100", 49.8, source=SADE),
    Published("sade", "ImageNet-LT", 58.8, source=SADE),
    Published("sade", "iNaturalist 2018", 72.9, source=SADE),
    Published("sade", "Places-LT", 40.9, source=SADE),
    _mmf("ride", "CIFAR-100-LT IR100", "67.0/49.9/25.7/48.6", RIDE),
    _mmf("ride", "ImageNet-LT", "67.0/52.2/36.0/55.7", RIDE),
    _mmf("ride", "iNaturalist 2018", "70.2/71.2/71.6/71.2", RIDE),
    *_cifar100("bcl", 51.9, 56.6, 64.9, source=BCL),
    Published("bcl", "ImageNet-LT", 57.2, source=BCL_BIG),
    Published("focal", "CIFAR-10-LT IR100", 70.38, source=CAO_T2),
    Published("cb_focal", "CIFAR-10-LT IR100", 74.57, source=CUI),
    Published("ce", "CIFAR-10-LT IR100", 70.36, source=CAO),
    Published("cb", "CIFAR-10-LT IR100", 74.57, source=CAO),
    Published("ldam_drw", "CIFAR-10-LT IR100", 77.03, source=CAO),
    *[Published("lift", f"CIFAR-100-LT IR{ir}", v, source=LIFT_SRC, backbone=LIFT_B16, tuning="adaptformer",
                epochs=10, trainable=178_236) for ir, v in ((100, 81.7), (50, 83.1), (10, 84.9))],
    *[Published(f"lift (backbone={LIFT_IN21K})", f"CIFAR-100-LT IR{ir}", v, source=LIFT_SRC, backbone=LIFT_IN21K,
                tuning="adaptformer", epochs=10, trainable=178_236) for ir, v in ((100, 89.1), (50, 90.2), (10, 91.3))],
    Published("lift", "ImageNet-LT", 78.3, source=LIFT_SRC, backbone=LIFT_B16, tuning="adaptformer", epochs=10,
              trainable=1_385_868),
    Published(f"lift (backbone={LIFT_L14})", "ImageNet-LT", 82.9, source=LIFT_SRC, backbone=LIFT_L14,
              tuning="adaptformer", epochs=10, trainable=1_884_568),
    Published("lift", "Places-LT", 52.2, source=LIFT_SRC, backbone=LIFT_B16, tuning="adaptformer", epochs=10,
              trainable=455_532),
    Published(f"lift (backbone={LIFT_L14})", "Places-LT", 53.7, source=LIFT_SRC, backbone=LIFT_L14,
              tuning="adaptformer", epochs=10, trainable=644_216),
    Published(f"lift (backbone={LIFT_L14})", "iNaturalist 2018", 85.2, source=LIFT_SRC, backbone=LIFT_L14,
              tuning="adaptformer", epochs=20, trainable=14_705_688),
]


def published(row: str, column: str) -> Published | None:
    """The most detailed published entry for a row and column (one with many/medium/few wins)."""
    hits = [p for p in PUBLISHED if p.row == row and p.column == column]
    return max(hits, key=lambda p: p.many is not None, default=None)


# How to fill a missing column: the selectors of `ltbench run` for it.
FILL = {
    "CIFAR-100-LT IR100": "--dataset cifar100_lt --imbalance 100 --data-root DATA",
    "CIFAR-100-LT IR50": "--dataset cifar100_lt --imbalance 50 --data-root DATA",
    "CIFAR-100-LT IR10": "--dataset cifar100_lt --imbalance 10 --data-root DATA",
    "CIFAR-10-LT IR100": "--dataset cifar10_lt --imbalance 100 --data-root DATA",
    "ImageNet-LT": "--dataset imagenet_lt --data-root DATA",
    "iNaturalist 2018": "--dataset inat2018 --data-root DATA",
    "Places-LT": "--dataset places_lt --data-root DATA --init-weights IMAGENET_WEIGHTS",
}
