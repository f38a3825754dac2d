"""Pretrained backbones (ltbench.models.pretrained): the registry's open_clip and timm entries match their
libraries, weights come from the Hugging Face cache or --set backbone.weights=FILE, offline without them and
a wrong file are one line before anything is written, `ltbench list backbones` says what each is and whether
its weights are here, records keep the weights' provenance and parameter counts, and an ImageNet-1k
backbone on ImageNet-LT is flagged. No weights are downloaded: the tests build random-init models, make
checkpoints of the test-size ones, and lay out a Hugging Face cache by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ltbench.api import run  # noqa: E402
from ltbench.cli.app import app  # noqa: E402
from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.errors import LtbenchError  # noqa: E402
from ltbench.models import pretrained  # noqa: E402
from ltbench.models.pretrained import TINY_CLIP, Pretrained, build_run_model  # noqa: E402
from ltbench.registry import backbones  # noqa: E402
from ltbench.results.params import pretraining_notes, shows_trainable, trainable_text  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402

NAMED = ["clip_vit_b16", "clip_vit_l14", "clip_rn50", "clip_vit_tiny", "vit_b16_in21k", "vit_b16_in21k_ft_in1k",
         "resnet50_in1k", "timm_vit_tiny"]


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own: nothing of the machine's is read, nothing downloads."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def clip_file(tmp_path: Path, seed: int = 123, **vision) -> Path:
    torch.manual_seed(seed)
    cfg = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], **vision}}
    path = tmp_path / f"clip-{seed}-{len(vision)}.pt"
    torch.save(open_clip.CLIP(**cfg).state_dict(), path)
    return path


# ------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", NAMED)
def test_each_entry_matches_its_library(name):
    entry = backbones.get(name)
    with torch.device("meta"):
        model = entry(num_classes=10, in_channels=3)
    assert sum(p.numel() for p in model.features.parameters()) == entry.params
    assert model.text_params() == (entry.text_params or 0)
    if entry.library == "open_clip" and entry.tag:  # the repository its config names, the weights' activation
        assert open_clip.get_pretrained_cfg(entry.arch, entry.tag)["hf_hub"].rstrip("/") == entry.hub
    elif entry.published:
        assert timm.models.get_pretrained_cfg(entry.arch).hf_hub_id == entry.hub
    assert model(torch.empty(2, 3, 8, 8, device="meta")).shape == (2, 10)


def test_clip_keeps_its_text_tower_and_projection_out_of_the_trained_model():
    m = backbones.get("clip_vit_tiny")(num_classes=10, in_channels=1)
    assert not any(n.startswith(("clip", "_clip")) for n, _ in m.named_parameters())
    assert "token_embedding.weight" not in m.state_dict() and m.text_params() == 1_610_017
    text = m.encode_text(open_clip.get_tokenizer("ViT-B-16")(["a photo of a 3.", "a photo of a 7."]))
    image = m.features(torch.randn(2, 1, 8, 8)) @ m.image_projection
    assert text.shape == image.shape == (2, 32)  # the joint image-text space
    assert m.features.dim == 64 and m.preprocess["size"] == (32, 32)


def test_timm_names_resolve_and_an_unknown_one_is_one_line_with_close_names():
    assert backbones.get("timm:test_vit").arch == "test_vit"
    with pytest.raises(LtbenchError, match=r"timm has no model 'vit_base_patch16_22'.*timm:vit_base_patch16_224"):
        backbones.get("timm:vit_base_patch16_22")
    spec = resolve("ce", "digits_lt", backbone="timm:test_vit", sets=["backbone.weights=none"])
    assert spec.weights == "none" and spec.canonical()["weights"] == "none"
    assert spec.run_id != resolve("ce", "digits_lt", backbone="timm:test_vit").run_id


def test_list_backbones_shows_source_pretraining_size_and_weights(monkeypatch):
    out = CliRunner().invoke(app, ["list", "backbones", "--wide"])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("clip_vit_b16 "))
    for text in ("OpenAI's CLIP data", "open_clip ViT-B-16 'openai'", "85.8M params", "+63.4M text tower",
                 "not here (downloads on first use)"):
        assert text in line, text
    tiny = next(ln for ln in out.output.splitlines() if ln.startswith("clip_vit_tiny "))
    assert "random init" in tiny


def test_import_and_help_do_not_load_the_libraries():
    code = ("import sys, ltbench, ltbench.registry; from ltbench.cli.app import app; "
            "print(sorted(m for m in ('open_clip', 'timm', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# ------------------------------------------------------------------------------ where the weights come from


def test_offline_without_the_weights_is_one_line_naming_where_it_looked_and_both_fixes(tmp_path, empty_hub_cache):
    for args in (["--no-download"], []):  # --no-download, and HF_HUB_OFFLINE (the fixture sets it)
        out = CliRunner().invoke(app, ["run", "-m", "ce", "-b", "clip_vit_b16", "--results", str(tmp_path / "r"),
                                       *args])
        assert out.exit_code != 0
        message = out.output.strip()
        assert message.count("\n") == 0 and message.startswith("error: backbone clip_vit_b16:"), message
        for text in (str(empty_hub_cache / "models--timm--vit_base_patch16_clip_224.openai"),
                     "connect once and run again", "--set backbone.weights=FILE",
                     "--no-download" if args else "HF_HUB_OFFLINE"):
            assert text in message, text
    assert not (tmp_path / "r").exists()  # no record left behind


def _cached(cache: Path, repo: str, name: str, state: dict) -> Path:
    """A file laid out as huggingface_hub caches it (refs/main -> snapshots/<commit>/<name>)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    path = root / "snapshots" / ("0" * 40) / name
    path.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_weights_in_the_hugging_face_cache_are_found_loaded_and_recorded(tmp_path, monkeypatch, empty_hub_cache):
    entry = Pretrained("cached_vit", "timm", "test_vit", pretraining="a test", params=97_088,
                       kwargs=(("img_size", 32), ("patch_size", 8), ("depth", 2)), hub="timm/test_vit.r160_in1k")
    monkeypatch.setitem(backbones._entries, "cached_vit", type(backbones.get_entry("clip_vit_tiny"))(
        "cached_vit", entry, "builtin (test)"))
    assert pretrained.weights_status(entry) == "not here (downloads on first use)"
    torch.manual_seed(5)
    source = timm.create_model("test_vit", num_classes=1000, img_size=32, patch_size=8, depth=2).state_dict()
    path = _cached(empty_hub_cache, "timm/test_vit.r160_in1k", "model.safetensors", source)
    assert pretrained.weights_status(entry) == "present (cache)"
    spec = resolve("ce", "digits_lt", backbone="cached_vit", epochs=1, sets=["data.imbalance=100",
                                                                            "train.tuning=linear"])
    result = execute(spec, Store(tmp_path / "r"), RunOptions(device="cpu", live_progress=False, download=False))
    record = result["method_record"]["backbone"]
    assert record["source"] == "timm test_vit from the Hugging Face cache" and record["file"] == str(path)
    assert record["sha256"] == pretrained.file_id(path)[7:]
    model = torch.load(Store(tmp_path / "r").run_dir(spec).model_file, weights_only=True)
    assert torch.equal(model["features.net.blocks.1.mlp.fc2.weight"], source["blocks.1.mlp.fc2.weight"])
    assert "head.weight" in source and result["params"]["trainable"] == 650  # the source's head is dropped


def test_a_weights_file_is_loaded_its_sha256_joins_the_run_id_and_the_record(tmp_path):
    path = clip_file(tmp_path)
    spec = resolve("ce", "digits_lt", backbone="clip_vit_tiny", epochs=1,
                   sets=["data.imbalance=100", "train.tuning=linear", f"backbone.weights={path}"])
    assert spec.weights == pretrained.file_id(path)
    assert spec.run_id != resolve("ce", "digits_lt", backbone="clip_vit_tiny", epochs=1,
                                  sets=["data.imbalance=100", "train.tuning=linear"]).run_id
    results = run(method="ce", backbone="clip_vit_tiny", epochs=1, set=["data.imbalance=100", "train.tuning=linear",
                  f"backbone.weights={path}"], results=tmp_path / "r", progress=False, device="cpu")
    record = results[0]["method_record"]["backbone"]
    assert record["sha256"] == spec.weights[7:] and record["source"] == f"backbone.weights {path}"
    source = torch.load(path, weights_only=True)
    model = torch.load(next((tmp_path / "r" / "runs").glob("*/*/*/model.pt")), weights_only=True)
    assert torch.equal(model["features.net.conv1.weight"], source["visual.conv1.weight"])  # linear: untouched
    built, _ = build_run_model(spec, 10, 1, path, False)
    assert torch.equal(built.clip.token_embedding.weight, source["token_embedding.weight"])  # the text tower too
    assert torch.equal(built.image_projection, source["visual.proj"])


@pytest.mark.parametrize("make, message", [
    (lambda tmp: clip_file(tmp, width=128), r"does not fit clip_vit_tiny \(open_clip clip_vit_tiny\): 32 tensors of "
                                            r"another shape \(first visual.class_embedding: \[128\] in the file, "
                                            r"\[64\] in the model\)"),
    (lambda tmp: (tmp / "notes.txt", (tmp / "notes.txt").write_text("hello"))[0], "not a readable checkpoint"),
    (lambda tmp: (tmp / "t.pt", torch.save({"x": 1}, tmp / "t.pt"))[0], "holds no state dict of tensors"),
    (lambda tmp: (tmp / "v.pt", torch.save(timm.create_model("test_vit", num_classes=0).state_dict(),
                                           tmp / "v.pt"))[0], r"does not fit clip_vit_tiny .*missing \(first "),
    (lambda tmp: tmp / "missing.pt", "no such file"),
])
def test_a_wrong_weights_file_is_one_line_before_anything_is_written(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(LtbenchError, match=message) as exc:
        run(method="ce", backbone="clip_vit_tiny", epochs=1, set=[f"backbone.weights={path}"],
            results=tmp_path / "r", progress=False)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "r").exists()


def test_the_run_refuses_another_weights_file_than_its_spec_names(tmp_path):
    a, b = clip_file(tmp_path, seed=1), clip_file(tmp_path, seed=2)
    spec = resolve("ce", "digits_lt", backbone="clip_vit_tiny", epochs=1, sets=[f"backbone.weights={a}"])
    with pytest.raises(LtbenchError, match="is not that file; pass the same file again"):
        execute(spec, Store(tmp_path / "r"), RunOptions(device="cpu", live_progress=False, backbone_weights=b))
    assert not list((tmp_path / "r").glob("runs/*/*/*"))


@pytest.mark.parametrize("backbone, sets, message", [
    ("resnet32", ["backbone.weights=none"], "resnet32 is not a pretrained backbone"),
    ("clip_vit_tiny", ["backbone.weights=none"], "clip_vit_tiny has no pretrained weights"),
    ("clip_vit_tiny", ["backbone.lr=1"], "the backbone has one setting, weights"),
])
def test_backbone_settings_that_make_no_sense_are_refused(tmp_path, backbone, sets, message):
    with pytest.raises(LtbenchError, match=message):
        run(method="ce", backbone=backbone, set=sets, results=tmp_path, progress=False, dry_run=True)


# ------------------------------------------------------------------------------ records and tables


def test_an_imagenet_1k_backbone_on_imagenet_lt_is_flagged(monkeypatch):
    monkeypatch.setattr(pretrained, "locate", lambda *a, **k: (None, "test: random init"))
    spec = resolve("ce", "imagenet_lt", backbone="resnet50_in1k")
    _, record = build_run_model(spec, 1000, 3, None, False)
    assert "ImageNet-LT's training and validation images" in record["backbone"]["overlap"]
    result = {"backbone": "resnet50_in1k", "label": "ImageNet-LT", "method_record": record, "spec": spec.canonical()}
    assert pretraining_notes([result]) == [f"resnet50_in1k on ImageNet-LT: pretrained on images of this benchmark "
                                           f"({record['backbone']['overlap']})"]
    _, other = build_run_model(resolve("ce", "places_lt", backbone="resnet50_in1k"), 365, 3, None, False)
    assert "overlap" not in other["backbone"]


def test_trainable_parameters_column_and_show(tmp_path):
    results = run(method="ce", backbone="clip_vit_tiny", epochs=1, set=["data.imbalance=100", "train.tuning=bias"],
                  results=tmp_path, progress=False, device="cpu")
    params = results[0]["params"]
    assert params["trainable"] == 2058 and params["total"] == 114_314 and params["by_stage"] == {"train": 2058}
    assert shows_trainable(results) and trainable_text(params) == "2.06K (1.8%)"
    out = CliRunner().invoke(app, ["table", "--results", str(tmp_path), "-d", "digits_lt"])
    assert out.exit_code == 0 and "trainable" in out.output and "2.06K (1.8%)" in out.output, out.output
    show = CliRunner().invoke(app, ["show", results[0]["run_id"], "--results", str(tmp_path)])
    assert "parameters trained 2,058 of 114,314 (1.8%); text tower 1,610,017" in show.output, show.output
    assert not shows_trainable([{"spec": {"stages": {"train": {"lr": 0.1}}}, "method_record": {}}])
