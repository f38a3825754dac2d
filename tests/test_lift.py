"""LIFT (methods/lift.py), zero-shot CLIP (methods/zeroshot.py), the text-feature heads
(ltbench.models.text_head) and test-time ensembling (ltbench.models.tte), each against a hand computation of
the authors' formulas (shijxcs/LIFT: utils/config.py, models/classifiers.py, models/clip_text.py,
models/models.py, trainer.py, utils/losses.py), and through the engine on clip_vit_tiny and digits-LT: what
trains, the record, resume after an interruption, `ltbench eval`, the refusals; and the decoupled methods
(wb, crt, lws, tau_norm) on a pretrained backbone with a tuned stage 1 and stage 2 on cached features."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("open_clip")
pytest.importorskip("timm")

import open_clip  # noqa: E402
import torch  # noqa: E402
from cifar_files import write_cifar  # noqa: E402
from ltbench.methods.lift import LIFT  # noqa: E402
from ltbench.methods.logit_adjust import log_prior  # noqa: E402
from ltbench.methods.zeroshot import ZeroShot  # noqa: E402
from test_more_methods import stop_after  # noqa: E402  (the shared interruption: after_epoch raises, a kill)
from typer.testing import CliRunner  # noqa: E402

from ltbench.cli.app import app  # noqa: E402
from ltbench.cli.eval import load_model, run_eval  # noqa: E402
from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.method import StageContext  # noqa: E402
from ltbench.models import peft  # noqa: E402
from ltbench.models.pretrained import build_run_model  # noqa: E402
from ltbench.models.text_head import (  # noqa: E402
    LIFT_SCALE,
    CosineClassifier,
    class_means,
    head_weights,
    templates,
    text_embeddings,
)
from ltbench.models.tte import CropEnsemble  # noqa: E402
from ltbench.registry import backbones, benchmarks  # noqa: E402
from ltbench.results.reference import PUBLISHED  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402

OPTS = RunOptions(device="cpu", live_progress=False)
EVAL_OPTS = {"device": "cpu", "data_root": "data", "download": False, "split_root": None}
CPU = torch.device("cpu")
NAMES = ["sea_lion", "tabby cat", "airplane", "great_white_shark", "tench", "goldfish", "maple tree", "bus",
         "church", "parachute"]
COUNTS = [100, 60, 40, 25, 15, 9, 6, 4, 2, 1]
# clip_vit_tiny by hand: width 64, 2 blocks; 10 classes: AdaptFormer width 2^floor(log2(10 / 4)) = 2
ADAPTFORMER = 2 * (2 * 64 + (64 * 2 + 2) + (2 * 64 + 64) + 1)  # per block: LN, down, up, scale
COSINE_HEAD = 10 * 64  # no bias


def clip_model(seed: int = 0, mode: str | None = None, name: str = "clip_vit_tiny"):
    torch.manual_seed(seed)
    m = backbones.get(name)(10, 3)
    if mode is not None:
        peft.insert(m, {"tuning": mode, "adapter_dim": 0}, 10)
    return m


def lift_ctx(sets: tuple[str, ...] = (), names: list[str] | None = NAMES, splits=None, backbone="clip_vit_tiny"):
    hp = resolve("lift", "digits_lt", backbone=backbone, sets=list(sets)).stages["train"]
    return StageContext(stage="train", hp=hp, splits=splits, device=CPU, num_classes=10, class_counts=COUNTS,
                        class_names=names)


def hand_text(model, prompts: list[str]) -> torch.Tensor:
    """CLIP's text embeddings as LIFT's models/clip_text.py computes them: token and position embeddings, the
    text transformer (causal mask), ln_final, the end-of-text token's row (the highest id) times the text
    projection; tokens from CLIP's own tokenizer (LIFT's clip.tokenize, open_clip.tokenize here)."""
    clip = model.clip
    tokens = open_clip.tokenize(prompts)
    with torch.no_grad():
        x = clip.token_embedding(tokens) + clip.positional_embedding
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        return x[torch.arange(len(prompts)), tokens.argmax(dim=-1)] @ clip.text_projection


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------ the head and the loss by hand


def test_cosine_classifier_is_s_cos_by_hand_with_lifts_scale_25():
    # their utils/config.py: scale 25, given to CosineClassifier(**cfg) (models/models.py), not the class's 30
    assert LIFT_SCALE == 25.0 and LIFT().hparams("train", "lift", "cifar")["scale"] == 25.0
    torch.manual_seed(0)
    head = CosineClassifier(6, 4)
    assert float(head.scale) == 25.0
    # LIFT's random rows: uniform in [-1, 1], those longer than 1 scaled to length 1
    assert head.weight.abs().max() <= 1 and torch.all(head.weight.norm(dim=1) <= 1 + 1e-6)
    x = torch.randn(3, 6, dtype=torch.float64)
    w = head.weight.detach().double()
    hand = torch.tensor([[25.0 * sum(float(x[i, d] * w[k, d]) for d in range(6))
                          / math.sqrt(sum(float(x[i, d]) ** 2 for d in range(6)))
                          / math.sqrt(sum(float(w[k, d]) ** 2 for d in range(6))) for k in range(4)]
                         for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(head.double()(x), hand)
    # with a projection P (zero-shot CLIP): s cos(x P, w_k)
    p = torch.randn(6, 5)
    projected = CosineClassifier(6, 4, scale=7.0, projection=p)
    got = projected(x.float())
    torch.testing.assert_close(got, 7.0 * unit(x.float() @ p) @ unit(projected.weight.detach()).T)


def test_the_logit_adjusted_loss_is_ce_of_z_plus_tau_log_prior_by_hand():
    model = clip_model(mode="adaptformer")
    ctx = lift_ctx(("train.tau=0.5",))
    LIFT().prepare(model, ctx)
    z = torch.randn(5, 10, dtype=torch.float64)
    y = torch.tensor([0, 3, 9, 9, 4])
    total = sum(COUNTS)
    losses = []
    for i in range(5):  # their LogitAdjustedLoss: CE(z + tau log(n_k / sum n))
        adj = [float(z[i, k]) + 0.5 * math.log(COUNTS[k] / total) for k in range(10)]
        losses.append(math.log(sum(math.exp(a) for a in adj)) - adj[int(y[i])])
    assert torch.equal(ctx.state["log_prior"], log_prior(COUNTS))  # what prepare gives the loss
    assert float(LIFT().loss(z, y, ctx)) == pytest.approx(sum(losses) / 5, rel=1e-6)


# ------------------------------------------------------------------------------ the head's initialisation


def test_text_init_is_lifts_hand_computation_through_the_transposed_projection():
    model = clip_model(mode="adaptformer")
    ctx = lift_ctx()
    LIFT().prepare(model, ctx)
    assert ctx.record["head_init"] == "text (prompt default)"
    # their init_head_text_feat: "a photo of a {}." with "_" as a space, each embedding normalised, then on a
    # CLIP ViT (features before the image projection P) t P^T normalised again
    text = unit(hand_text(model, [f"a photo of a {n.replace('_', ' ')}." for n in NAMES]))
    hand = unit(text @ model.image_projection.T)
    torch.testing.assert_close(model.classifier.weight.detach(), hand)
    assert isinstance(model.classifier, CosineClassifier) and float(model.classifier.scale) == 25.0
    # a CLIP ResNet's features are in the joint space already: the embeddings as they are
    rn = type("RN", (), {"image_projection": None})()
    assert head_weights(rn, text) is text


def test_the_prompt_ensemble_averages_the_normalised_embeddings_of_clips_80_templates():
    model = clip_model()
    names = NAMES[:3]
    ensemble = templates("ensemble")
    # LIFT's utils/templates.py ZEROSHOT_TEMPLATES["imagenet"]: 80 templates, first and last as here
    assert len(ensemble) == 80 and ensemble[0] == "a bad photo of a {}." and ensemble[-1] == "a tattoo of the {}."
    every = hand_text(model, [t.format(n.replace("_", " ")) for t in ensemble for n in names])
    hand = unit(every.view(80, 3, -1)).mean(0)  # per template normalised, then averaged (not normalised again)
    torch.testing.assert_close(text_embeddings(model, names, "ensemble"), hand)
    torch.testing.assert_close(text_embeddings(model, names, "classname"),
                               unit(hand_text(model, ["sea lion", "tabby cat", "airplane"])))
    model.clip.train()
    text_embeddings(model, names, "default")
    assert model.clip.training  # its mode is put back


@pytest.mark.parametrize("backbone, sets", [("clip_vit_tiny", ("train.init_head=class_mean",)),
                                            ("timm_vit_tiny", ())])  # auto: class_mean without a text tower
def test_class_mean_init_is_the_normalised_mean_feature_of_each_class(backbone, sets):
    splits = benchmarks.get("digits_lt")().load({"imbalance": 20.0}, None)
    model = clip_model(mode="adaptformer", name=backbone)
    ctx = lift_ctx(sets, names=None, splits=splits, backbone=backbone)
    ctx.class_counts = splits.class_counts
    model.train()
    LIFT().prepare(model, ctx)
    assert ctx.record["head_init"] == "class_mean" and model.features.training
    model.eval()
    with torch.no_grad():  # unaugmented training images through the extractor in eval mode
        feats = model.features(splits.normalize(splits.train.x))
    y = splits.train.y
    hand = torch.stack([unit(feats[y == c].mean(0)) for c in range(10)])
    torch.testing.assert_close(model.classifier.weight.detach(), hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(class_means(model.features, splits, 10, CPU, batch_size=100), hand, rtol=1e-5,
                               atol=1e-6)  # batches do not change it


def test_only_the_adapters_and_the_head_train_each_with_lifts_weight_decay():
    model = clip_model(mode="adaptformer")
    ctx = lift_ctx()
    peft.freeze(model, ctx.hp["tuning"])
    LIFT().prepare(model, ctx)
    groups = LIFT().param_groups(model, ctx)
    adapters = [p for m in model.features.modules() if isinstance(m, peft.Bottleneck) for p in m.parameters()]
    # their build_optimizer: SGD over the tuner's and the head's parameters, both with cfg.weight_decay (5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in adapters + [model.classifier.weight]}
    assert sum(p.numel() for p in groups[0]["params"]) == ADAPTFORMER + COSINE_HEAD


# ------------------------------------------------------------------------------ the published rows' sizes


COLUMN_CLASSES = {"CIFAR-100-LT": 100, "ImageNet-LT": 1000, "Places-LT": 365, "iNaturalist 2018": 8142}


@pytest.mark.parametrize("row", [p for p in PUBLISHED if p.row.startswith("lift")], ids=lambda p: f"{p.row}|{p.column}")
def test_published_lift_rows_trainable_counts_are_recomputed_on_the_real_shapes(row):
    classes = next(n for prefix, n in COLUMN_CLASSES.items() if row.column.startswith(prefix))
    with torch.device("meta"):  # the real architecture, no weights
        model = backbones.get(row.backbone)(classes, 3)
        peft.insert(model, {"tuning": row.tuning, "adapter_dim": 0}, classes)
        peft.freeze(model, row.tuning)
        model.classifier = CosineClassifier(model.feature_dim, classes)
    counted = peft.ParamCount()
    counted.stage("train", model)
    assert counted.record(model)["trainable"] == row.trainable
    assert (row.epochs, row.tuning) == (20 if row.column == "iNaturalist 2018" else 10, "adaptformer")


# ------------------------------------------------------------------------------ a LIFT run


@pytest.fixture(scope="module")
def lift_run(tmp_path_factory):
    """A finished 2-epoch LIFT run on digits-LT (clip_vit_tiny)."""
    store = Store(tmp_path_factory.mktemp("lift"))
    spec = resolve("lift", "digits_lt", backbone="clip_vit_tiny", epochs=2)
    return store, spec, execute(spec, store, OPTS)


def test_a_lift_run_trains_only_the_adapters_and_the_head_and_records_them(lift_run):
    store, spec, result = lift_run
    rd = store.run_dir(spec)
    torch.manual_seed(spec.seed)  # the model as the run built it
    start = build_run_model(spec, 10, 1, None, False)[0].state_dict()
    final = torch.load(rd.model_file, weights_only=True)
    features = [k for k in start if k.startswith("features.")]
    assert set(final) == set(features) | {"classifier.weight", "classifier.scale"}  # a cosine head, no bias
    changed = {k for k in features if not torch.equal(start[k], final[k])}
    assert changed and all(".mlp.branch." in k for k in changed)  # AdaptFormer's modules, nothing else
    assert any(k.endswith("branch.up.weight") for k in changed)
    assert float(final["classifier.scale"]) == 25.0
    assert result["params"]["trainable"] == ADAPTFORMER + COSINE_HEAD == 1542
    assert result["params"]["total"] == 113_664 + ADAPTFORMER + COSINE_HEAD
    record = result["method_record"]
    assert record["head_init"] == "text (prompt default)" and "tte" not in record
    assert record["tuning_modules"] == {"tuning": "adaptformer", "blocks": 2, "adapter_dim": 2}
    # their CosineAnnealingLR(T=epochs) stepped after each epoch: epoch e at 0.01 (1 + cos(pi e / 2)) / 2
    lrs = [r["lr"] for r in rd.metrics()]
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 2)) / 2 for e in range(2)])  # 0.01, 0.005
    assert result["selected"]["epoch"] == 2  # the last epoch, as they report


def test_a_lift_run_resumes_bit_identically_after_an_interruption(lift_run, tmp_path, monkeypatch):
    _, spec, reference = lift_run
    store = Store(tmp_path)
    with monkeypatch.context() as patch:  # killed in epoch 2, after epoch 1's checkpoint
        patch.setattr(LIFT, "after_epoch", stop_after(2))
        with pytest.raises(KeyboardInterrupt):
            execute(spec, store, OPTS)
    assert store.run_dir(spec).load_checkpoint()["epoch"] == 1
    resumed = execute(spec, store, OPTS)
    assert resumed["model_sha256"] == reference["model_sha256"]
    for key in ("val", "test", "classifier_norms", "selected", "params"):
        assert resumed[key] == reference[key], key


def test_ltbench_eval_of_a_lift_run_scores_its_test_report(lift_run):
    store, spec, result = lift_run
    record, _ = run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)
    for key in ("top1", "class_mean", "many", "medium", "few", "per_class"):
        assert record["scores"][key] == result["test"][key], key


# ------------------------------------------------------------------------------ test-time ensembling


def test_crop_ensemble_is_the_mean_logits_of_the_views_and_takes_nothing_else():
    model = clip_model(mode="adaptformer")
    LIFT().prepare(model, lift_ctx())
    model.eval()
    views = torch.randn(2, 5, 3, 32, 32)  # (N, K, C, H, W), as the data's test-time crops come
    with torch.no_grad():
        hand = sum(model(views[:, k]) for k in range(5)) / 5
        torch.testing.assert_close(CropEnsemble(model, 24, "five")(views), hand)
        with pytest.raises(ValueError, match=r"takes the crops of each image, \(N, K, C, H, W\), not \(2, 3, 32, 32\)"):
            CropEnsemble(model)(views[:, 0])  # an image already cut to the evaluation view: not LIFT's crops
    assert CropEnsemble(model).classifier is model.classifier


def pil_crops(x: torch.Tensor, mode: str, short: int = 56, size: int = 32) -> torch.Tensor:
    """LIFT's test transform by hand on the PIL image of a uint8 (C, H, W) image: torchvision's Resize(short),
    then FiveCrop(size) or TenCrop(size); (K, C, size, size) uint8."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms

    a = x.permute(1, 2, 0).numpy()
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    cut = transforms.FiveCrop(size) if mode == "five" else transforms.TenCrop(size)
    crops = cut(transforms.Resize(short)(img))
    return torch.stack([torch.from_numpy(np.array(c)).reshape(size, size, -1).permute(2, 0, 1) for c in crops])


def spy(monkeypatch, cls: type) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every (input, output) of ``cls.forward`` from now on (the real forward runs)."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = cls.forward

    def forward(self, x):
        out = real(self, x)
        calls.append((x.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(cls, "forward", forward)
    return calls


@pytest.mark.parametrize("mode", ["five", "ten"])
def test_a_lift_run_with_tte_reports_and_evaluates_the_crops_of_each_whole_image_as_lift_by_hand(tmp_path,
                                                                                                 monkeypatch, mode):
    from ltbench.engine.evaluation import accuracy_report

    store = Store(tmp_path)
    spec = resolve("lift", "digits_lt", backbone="clip_vit_tiny", epochs=1,
                   sets=["train.tte=true", f"train.tte_crops={mode}"])
    calls = spy(monkeypatch, CropEnsemble)
    result = execute(spec, store, OPTS)
    assert result["method_record"]["tte"] == {"crops": mode, "expand": 24}
    crop = "FiveCrop" if mode == "five" else "TenCrop"
    assert result["data_info"]["tte"].startswith(f"Resize(56) + {crop}(32) of each whole image")
    rd = store.run_dir(spec)
    splits = benchmarks.get("digits_lt")().load(spec.data, None)
    wrapped = load_model(rd, rd.spec(), result, splits, CPU)
    assert isinstance(wrapped, CropEnsemble) and (wrapped.expand, wrapped.mode) == (24, mode)
    model = wrapped.model.eval()
    # LIFT's test loader by hand: each 8x8 digit (grey, as a PIL image) resized to 32 + 24 = 56 and cut into
    # torchvision's five (ten) crops of 32, then three channels, ToTensor and CLIP's mean/std
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD))
    crops = torch.stack([pil_crops(img, mode) for img in splits.test.x])  # (N, K, 1, 32, 32)
    views = (crops.expand(-1, -1, 3, -1, -1).float() / 255 - mean) / std
    given = torch.cat([x for x, _ in calls])  # what the final report gave the ensemble, in order: val, then test
    test = slice(len(splits.val), len(splits.val) + len(splits.test))
    torch.testing.assert_close(given[test], views, rtol=0, atol=1e-6)
    with torch.no_grad():
        hand = torch.stack([model(views[:, k]) for k in range(views.shape[1])]).mean(0)  # their test(): the mean
    torch.testing.assert_close(torch.cat([o for _, o in calls])[test], hand, rtol=1e-4, atol=1e-5)
    report = accuracy_report(hand, splits.test.y, result["class_counts"], splits.shot_rule)
    for key in ("top1", "class_mean", "many", "medium", "few", "per_class"):
        assert report[key] == result["test"][key], key
    calls.clear()
    record, _ = run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)
    torch.testing.assert_close(torch.cat([x for x, _ in calls]), views, rtol=0, atol=1e-6)  # the same crops
    assert record["data_info"]["tte"] == result["data_info"]["tte"]
    for key in ("top1", "class_mean", "many", "medium", "few", "per_class"):
        assert record["scores"][key] == result["test"][key], key


# ------------------------------------------------------------------------------ zero-shot CLIP


def test_zeroshot_logits_are_exp_logit_scale_cos_of_the_projected_feature_and_the_text_by_hand():
    model = clip_model()
    ctx = lift_ctx()
    ZeroShot().prepare(model, ctx)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        image = model.features(x) @ model.image_projection  # the class token after ln_post, projected
    text = unit(hand_text(model, [f"a photo of a {n.replace('_', ' ')}." for n in NAMES]))
    scale = math.exp(float(model.clip.logit_scale.detach()))  # their ZeroShotCLIP: logit_scale.exp()
    with torch.no_grad():
        torch.testing.assert_close(model(x), scale * unit(image) @ text.T)
    assert ctx.record["zero_shot"] == {"prompt": "default", "logit_scale": scale, "embedding_dim": 32}


def test_a_zeroshot_run_trains_nothing_and_scores_as_the_hand_computation_and_eval(tmp_path, monkeypatch):
    from ltbench.models.pretrained import PretrainedModel

    store = Store(tmp_path)
    spec = resolve("zeroshot", "digits_lt", backbone="clip_vit_tiny")
    calls = spy(monkeypatch, PretrainedModel)
    result = execute(spec, store, OPTS)
    rd = store.run_dir(spec)
    assert result["params"]["trainable"] == 0 and not rd.checkpoint_file.exists() and not list(rd.metrics())
    torch.manual_seed(spec.seed)
    model = build_run_model(spec, 10, 1, None, False)[0].eval()  # the model as the run built it
    final = torch.load(rd.model_file, weights_only=True)
    start = model.state_dict()
    assert all(torch.equal(start[k], final[k]) for k in start if k.startswith("features."))  # no training
    text = unit(hand_text(model, [f"a photo of a {d}." for d in range(10)]))
    torch.testing.assert_close(final["classifier.weight"], text)
    scale = math.exp(float(model.clip.logit_scale.detach()))
    assert calls
    with torch.no_grad():  # every batch the report scored: exp(logit_scale) cos(feature P, text), by hand
        for x, out in calls:
            image = model.features(x) @ model.image_projection
            torch.testing.assert_close(out, scale * unit(image) @ text.T, rtol=1e-4, atol=1e-4)
    record, _ = run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)
    for key in ("top1", "class_mean", "many", "medium", "few", "per_class"):
        assert record["scores"][key] == result["test"][key], key


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("backbone", ["timm_vit_tiny", "small_cnn"])
def test_zeroshot_on_a_backbone_without_a_text_tower_is_one_line_and_writes_nothing(tmp_path, backbone):
    r = invoke("run", "-m", "zeroshot", "-b", backbone, "--device", "cpu", "--results", tmp_path)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"zeroshot needs a CLIP backbone (image and text towers); {backbone} has no text tower" in r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("method", ["lift", "zeroshot"])
def test_a_benchmark_without_class_names_is_refused_in_one_line_before_anything_is_written(tmp_path, method):
    folder = write_cifar(tmp_path / "data", "cifar10", images_per_class_train=5)
    (folder / "batches.meta").unlink()  # CIFAR without its meta file: no names
    r = invoke("run", "-m", method, "-d", "cifar10_lt", "-b", "clip_vit_tiny", "--data-root", tmp_path / "data",
               "--no-download", "--device", "cpu", "--results", tmp_path / "res")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"{method} needs the class names of CIFAR-10-LT IR100" in r.output and "batches.meta is missing" in r.output
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("method, backbone, init, needs", [
    ("lift", "clip_vit_tiny", "auto", True), ("lift", "clip_vit_tiny", "text", True),
    ("lift", "clip_vit_tiny", "class_mean", False), ("lift", "clip_vit_tiny", "random", False),
    ("lift", "timm_vit_tiny", "auto", False),  # auto: class_mean without a text tower
    ("zeroshot", "clip_vit_tiny", None, True), ("ce", "clip_vit_tiny", None, False)])
def test_a_method_needs_class_names_only_where_its_resolved_settings_read_them(method, backbone, init, needs):
    from ltbench.registry import methods

    spec = resolve(method, "digits_lt", backbone=backbone, sets=[f"train.init_head={init}"] if init else [])
    assert methods.get(method)().needs_class_names(spec) is needs


@pytest.mark.parametrize("init", ["class_mean", "random"])
def test_lift_with_a_head_that_reads_no_class_names_runs_on_a_benchmark_without_them(tmp_path, monkeypatch, init):
    from test_fm_data import small_cifar10

    small_cifar10(tmp_path / "data", monkeypatch)  # 12 training images a class, 300 test images
    (tmp_path / "data" / "cifar-10-batches-py" / "batches.meta").unlink()  # without its meta file: no names
    r = invoke("run", "-m", "lift", "-d", "cifar10_lt", "-b", "clip_vit_tiny", "--data-root", tmp_path / "data",
               "--no-download", "--device", "cpu", "--results", tmp_path / "res", "--epochs", 1, "--imbalance", 10,
               "--set", f"train.init_head={init}", "--set", "data.val_per_class=2")
    assert r.exit_code == 0, r.output
    [result] = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("runs/*/lift/*/result.json")]
    assert result["method_record"]["head_init"] == init and result["class_names"] is None


# ------------------------------------------------------------------------------ decoupled methods on a pretrained backbone


@pytest.mark.parametrize("tuning, stage1_trainable", [("linear", 650), ("adaptformer", ADAPTFORMER + 650)])
def test_decoupled_methods_on_clip_train_stage2_on_cached_features_and_table(tmp_path, tuning, stage1_trainable):
    r = invoke("run", "-m", "wb,crt,lws,tau_norm", "-b", "clip_vit_tiny", "--recipe", "lift", "--epochs", 1,
               "--set", f"stage1.tuning={tuning}", "--device", "cpu", "--results", tmp_path)
    assert r.exit_code == 0, r.output
    store = Store(tmp_path)
    records = {}
    for method in ("wb", "crt", "lws", "tau_norm"):
        spec = resolve(method, "digits_lt", backbone="clip_vit_tiny", recipe="lift", epochs=1,
                       sets=[f"stage1.tuning={tuning}"])
        records[method] = store.run_dir(spec).result()
    parents = {r["method_record"]["parent"] for r in records.values()}
    assert len(parents) == 1  # one CE stage 1 with the chosen tuning, shared
    stage1 = store.run_dir(spec.parent_spec())
    s1 = stage1.result()
    assert s1["params"]["trainable"] == stage1_trainable and s1["spec"]["stages"]["train"]["tuning"] == tuning
    for method, trainable in (("wb", 650), ("crt", 650), ("lws", 10)):
        record = records[method]["method_record"]
        assert record["stage2_path"] == "cached_features" and record["stage2_features"], method
        assert records[method]["params"]["by_stage"] == {"stage2": trainable}, method
    assert "posthoc_features" in records["tau_norm"]["method_record"]
    if tuning == "adaptformer":
        assert records["wb"]["method_record"]["tuning_modules"]["tuning"] == "adaptformer"
    else:  # stage 1 left the pretrained tower as it was built
        torch.manual_seed(0)
        start = build_run_model(spec.parent_spec(), 10, 1, None, False)[0].state_dict()
        trained = torch.load(stage1.model_file, weights_only=True)
        assert all(torch.equal(start[k], trained[k]) for k in start if k.startswith("features."))
    table = invoke("table", "--results", tmp_path, "--dataset", "digits_lt", "--format", "json")
    rows = json.loads(table.stdout)["rows"]
    for method, record in records.items():
        assert rows[method]["digits-LT IR20"]["all"]["mean"] == round(record["test"]["top1"], 2), method
