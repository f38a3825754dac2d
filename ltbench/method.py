"""The interface a method plugin implements: hooks into the engine's loop, never a loop of its own.

The engine owns epochs, the optimizer, the schedule, AMP, checkpoints and progress. A method says
what differs: its stages and their hyperparameter defaults, the loss, which parameters train (and
their weight decay), the sampler (a stage hyperparameter), a per-step and per-epoch hook (e.g.
MaxNorm projection), and a post-hoc transform of the trained model (e.g. tau-norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported lazily so that `ltbench list/table/status` start fast
    import torch

    from .data.splits import TrainSplits
    from .spec.schema import Setting, Settings


@dataclass(frozen=True)
class Presentation:
    """How a method is shown, declared in one place: ``order``, its row's place in tables (the built-ins
    from 0 to 73; plugins after them, by name); ``stage1_row``, for a decoupled method whose stage-1 run
    is a row of its own, (that row's name, its order); ``in_default_run``: part of `ltbench run` without
    --method (the weight-balancing paper's comparison set, the README's quickstart), else it runs with
    --method NAME or --method all; ``in_all``: part of --method all (False: only by name, as the methods
    that need a foundation model's weights, zeroshot and lift)."""

    order: float = 100.0
    stage1_row: tuple[str, float] | None = None
    in_default_run: bool = True
    in_all: bool = True


@dataclass
class StageContext:
    """What a method's hooks may read (and, in ``state`` and ``record``, write) during one stage."""

    stage: str
    hp: Settings  # the stage's resolved values (a dict whose keys also read as attributes: ctx.hp.lr)
    splits: TrainSplits  # the benchmark's splits, or in a frozen-feature stage their features
    device: torch.device
    num_classes: int
    class_counts: list[int]
    epoch: int = 0  # 0-based epoch being trained
    seed: int = 0  # the run's seed: a method's own random draws (e.g. extra views) derive from it
    state: dict[str, Any] = field(default_factory=dict)  # method-private tensors (e.g. class weights)
    record: dict[str, Any] = field(default_factory=dict)  # extra fields for result.json
    # a frozen-feature stage: the backbone's features of every split, computed once (FeatureSplits)
    features: Any = None
    # the stage's engine options (ltbench.engine.stage_options.StageOptions: MaxNorm's radius, the class
    # weights of re-weighting, ...), made by the engine as the stage starts, after ``prepare``
    options: Any = None
    # the benchmark's class names (label order; Benchmark.read_class_names), None where it has none
    class_names: list[str] | None = None
    # True where the model's weights are loaded right after ``prepare`` (`ltbench eval`): prepare need only
    # shape the model, not initialise it (e.g. a head from text features)
    restoring: bool = False

    def __post_init__(self) -> None:
        from .spec.schema import settings_of

        self.hp = settings_of(self.hp)


class Method:
    """Base class: plain cross-entropy with instance-balanced sampling, every parameter trained with
    the stage's weight decay. Subclasses override only what they change."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ("train",)
    default_recipe: ClassVar[str] = "paper"
    # Decoupled methods: the method whose run is this method's stage 1 (its own, shared record),
    # e.g. "ce". Its settings are addressed as stage1.<key> on the command line.
    stage1: ClassVar[str | None] = None
    # The method's own keys, declared (ltbench.spec.schema.Setting: type, range or choices, help); a key that
    # hparams() gives and that is not declared here is typed by its default.
    settings: ClassVar[tuple[Setting, ...]] = ()
    # Engine keys (ltbench.spec.schema.ENGINE: epochs, lr, weight_decay, sampler, ...) whose value
    # this method sets on purpose in hparams(). Any other engine key that hparams() returns for a
    # training stage is a name clash, refused when the method registers (check_hparam_names).
    overrides: ClassVar[frozenset[str]] = frozenset()
    # How tables and `ltbench run` show it (row order, its stage-1 run as a row, the quickstart's set).
    presentation: ClassVar[Presentation] = Presentation()
    # What `ltbench tune` searches when no --search names a key of this method: STAGE.KEY=RANGE items as
    # --search writes them (ltbench.tune.space), stage1.KEY for a decoupled method's stage-1 run.
    search_space: ClassVar[tuple[str, ...]] = ("train.lr=log:1e-3..0.5", "train.weight_decay=log:1e-5..1e-1")

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        """The method's hyperparameters of ``stage`` and their defaults: its own keys (e.g. ``beta``),
        and the engine keys it sets on purpose (listed in ``overrides``).

        ``recipe`` is the recipe's name (``paper``, ``official``, ...) and ``family`` the benchmark's
        recipe family (``Benchmark.recipe_family``: ``cifar``, ``digits``, ``imagenet_lt``,
        ``inat2018``, ``places_lt``), so that a default can follow a paper's code or a benchmark. The
        values resolved for a run are in ``ctx.hp`` and its spec.json."""
        return {}

    def data_hparams(self, stage: str, recipe: str, benchmark: str, data: dict[str, Any]) -> dict[str, Any]:
        """Defaults of ``stage`` that follow the data (``data``: the benchmark's parameters after
        --imbalance and --set data.KEY, e.g. its imbalance ratio), over those of ``hparams`` (MiSLAS's
        per-ratio CIFAR configs). Default: none."""
        return {}

    def stage1_hparams(self, recipe: str, family: str) -> dict[str, Any]:
        """Overrides of the stage-1 run's hyperparameters (e.g. WB's tuned weight decay)."""
        return {}

    def backbone_for(self, name: str) -> str:
        """The backbone this method runs on when the recipe or the benchmark would give ``name`` (and
        --backbone is not given): ``name`` itself, or e.g. a multi-expert variant of it (SADE, RIDE)."""
        return name

    def backbone_problems(self, backbone: str) -> list[str]:
        """Why this method cannot train ``backbone`` (a registered name), as messages; checked with the
        other pre-run checks (also by --dry-run). Empty when it can."""
        return []

    def needs_class_names(self, spec: Any) -> bool:
        """Whether a run of ``spec`` (a RunSpec) reads the benchmark's class names (``ctx.class_names``, e.g. for CLIP's text
        features), judged on its resolved settings and backbone: such a run is refused before anything is
        written where the benchmark cannot say them. Default: False."""
        return False

    def trains(self, stage: str) -> bool:
        """False for a stage that only transforms the model post hoc (no optimizer, no epochs)."""
        return True

    def frozen_features(self, stage: str) -> bool:
        """True when the stage trains the classifier only: the feature extractor stays frozen in eval
        mode, and without augmentation the engine trains on features extracted once."""
        return False

    def check(self, stage: str, hp: dict[str, Any]) -> list[str]:
        """Problems with the resolved hyperparameters, as messages; empty when all is well."""
        return []

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        """Called once before the stage trains (and again on resume, before the checkpoint loads)."""

    def param_groups(self, model: torch.nn.Module, ctx: StageContext) -> list[dict[str, Any]]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": ctx.hp["weight_decay"]}]

    def forward(self, net: torch.nn.Module, x: torch.Tensor, ctx: StageContext) -> Any:
        """One training forward pass of a batch: what ``loss`` and ``logits`` read. The default is the
        model's logits; a method whose loss needs more (the experts' logits of a multi-expert model,
        the projections of extra views for a contrastive loss) returns what it needs. Runs under the
        stage's autocast; evaluation never calls it (it runs the model itself)."""
        return net(x)

    def logits(self, out: Any) -> torch.Tensor:
        """The (N, C) logits in what ``forward`` returned (for the training accuracy)."""
        return out

    def loss(self, logits: Any, targets: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        """The batch's loss (a scalar mean) from what ``forward`` returned: by default the logits, in
        float32. The engine's stage options (mixup/cutmix, label smoothing, re-weighting) combine
        calls of this function; it must not assume it is called once per step."""
        import torch.nn.functional as F

        return F.cross_entropy(logits, targets)

    def after_step(self, model: torch.nn.Module, ctx: StageContext) -> None:
        """Called after every optimizer step."""

    def after_epoch(self, model: torch.nn.Module, ctx: StageContext) -> None:
        """Called after every epoch, before evaluation and the checkpoint."""

    def finalize(self, model: torch.nn.Module, ctx: StageContext) -> None:
        """Post-hoc transform of the selected model, before the final evaluation."""

    def report_model(self, model: torch.nn.Module, ctx: StageContext) -> torch.nn.Module:
        """The module that the final report (on images) and `ltbench eval` score (``ctx``: the last stage's):
        the model itself, or e.g. LIFT's test-time ensembling of crops around it (ltbench.models.tte). What
        is saved is always ``model``."""
        return model

    def report_splits(self, splits: TrainSplits, ctx: StageContext) -> TrainSplits:
        """The splits that the final report and `ltbench eval` score ``report_model`` on (``splits``: the images
        as the run's model read them): ``splits`` themselves, or e.g. LIFT's test-time crops of each whole
        image, batches (N, K, C, H, W) that its ensemble averages (ltbench.data.resolution.with_tte_crops)."""
        return splits


def check_hparam_names(method: type[Method]) -> list[str]:
    """Name clashes between a method's keys and the engine's: every engine key that ``hparams()``
    returns for a training stage (under any recipe and benchmark family) without being listed in
    ``overrides``. A method's own key must not share a name with an engine key (e.g. a focal loss's
    ``gamma`` and the step schedule's ``gamma``): one would silently replace the other."""
    from .spec.recipes import RECIPES
    from .spec.schema import GROUPS, engine_defaults, group_defaults

    m = method()
    families = sorted({f for table in RECIPES.values() for f in table})
    problems = []
    for stage in m.stages:
        if not m.trains(stage):
            continue  # no engine keys in a stage that does not train
        engine = {**engine_defaults(m.frozen_features(stage)), **{k: v for g in GROUPS for k, v in group_defaults(g).items()}}
        keys = {k for recipe in RECIPES for family in families for k in m.hparams(stage, recipe, family)}
        for key in sorted((keys & set(engine)) - m.overrides):
            problems.append(f"{method.__name__}.hparams() gives stage {stage!r} a key {key!r}, which is the "
                            f"engine's {stage}.{key} (default {engine[key]!r}); name the method's own key "
                            f"otherwise, or add {key!r} to {method.__name__}.overrides if it sets the engine's "
                            "value on purpose")
    return problems


class ClassifierRetraining(Method):
    """Base of the decoupled methods (Kang et al. 2020; weight balancing): stage 1 is a ``ce`` run
    with weight balancing's tuned weight decay (shared by every decoupled method with the same
    settings), stage 2 trains the final classifier of the frozen backbone, or only transforms it. Under
    ``--recipe kang`` a method with a row in ``recipes.KANG_STAGE2`` (cRT, LWS) takes that stage 2."""

    stage1 = "ce"
    stages = ("stage2",)
    search_space = ("stage1.weight_decay=log:1e-5..1e-1", "stage2.lr=log:1e-3..0.3")
    overrides = frozenset({"epochs", "lr", "schedule", "warmup_epochs", "augment", "frozen_bn",
                           "batch_size", "lr_scaling", "base_batch", "lr_update"})

    def stage1_hparams(self, recipe: str, family: str) -> dict[str, Any]:
        from .spec.recipes import TUNED_WEIGHT_DECAY

        if recipe == "lift":  # fine-tuning a pretrained backbone: the recipe's weight decay (LIFT's 5e-4), not the
            return {}  # value tuned for training a ResNet from scratch
        return {"weight_decay": TUNED_WEIGHT_DECAY[family]} if family in TUNED_WEIGHT_DECAY else {}

    def hparams(self, stage: str, recipe: str, family: str) -> dict[str, Any]:
        from .spec.recipes import kang_stage2

        kang = kang_stage2(self.name, family) if recipe == "kang" else {}
        if kang:  # Kang et al.'s configs for this method and benchmark (recipes.KANG_STAGE2)
            return kang
        if recipe == "official":  # the WB code: augmented images through the backbone left in train mode
            return {"epochs": 10, "lr": 0.01, "schedule": "cosine", "warmup_epochs": 0, "augment": True,
                    "frozen_bn": "train"}
        return {"epochs": 10, "lr": 0.01, "schedule": "cosine", "warmup_epochs": 0, "augment": False}

    def frozen_features(self, stage: str) -> bool:
        return True

    def prepare(self, model: torch.nn.Module, ctx: StageContext) -> None:
        model.features.requires_grad_(False)

    def param_groups(self, model: torch.nn.Module, ctx: StageContext) -> list[dict[str, Any]]:
        params = [p for p in model.classifier.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": ctx.hp["weight_decay"]}]
