"""Parameter-efficient tuning (ltbench.models.peft, the `tuning` stage option): each module against a hand
computation of LIFT's formulas (shijxcs/LIFT models/peft_modules.py, peft_vit.py), their initialisations
and default sizes, what each mode trains (counted by hand on clip_vit_tiny), and, through the engine,
that every mode trains, freezes what it should, records its parameter counts and resumes bit-identically
after an interruption (a real SIGKILL for one mode) on clip_vit_tiny and timm_vit_tiny."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("open_clip")
pytest.importorskip("timm")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ltbench.engine import training  # noqa: E402
from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.errors import LtbenchError  # noqa: E402
from ltbench.models import peft  # noqa: E402
from ltbench.models.pretrained import build_run_model  # noqa: E402
from ltbench.registry import backbones  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402

HP = {"vpt_len": 3, "adapter_dim": 2, "lora_alpha": 1.0}


def model(name: str = "timm_vit_tiny", mode: str | None = None, seed: int = 0, **sizes):
    torch.manual_seed(seed)
    m = backbones.get(name)(10, 3)
    if mode is not None:
        peft.insert(m, {"tuning": mode, **HP, **sizes}, 10)
    return m


def randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Every parameter of ``module`` drawn anew (non-zero), so that no term of a formula vanishes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def tokens(width: int = 64, n: int = 5, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, n, width, generator=torch.Generator().manual_seed(7))


# ------------------------------------------------------------------------------ the modules by hand


def test_adapter_is_h_plus_up_relu_down_ln_h_after_the_mlp():
    m = model(mode="adapter")
    block = m.features.net.blocks[0]
    randomize(block.mlp.adapter)
    x = tokens()
    a = block.mlp.adapter
    x1 = x + block.attn(block.norm1(x))
    h = block.mlp.mlp(block.norm2(x1))
    hand = x1 + h + F.linear(F.relu(F.linear(F.layer_norm(h, (64,), a.ln.weight, a.ln.bias), a.down.weight,
                                              a.down.bias)), a.up.weight, a.up.bias)
    torch.testing.assert_close(block(x), hand)


def test_adaptformer_adds_a_scaled_bottleneck_of_the_residual_stream_beside_the_mlp():
    plain, tuned = model(), model(mode="adaptformer")
    x = tokens()
    b0, b1 = plain.features.net.blocks[0], tuned.features.net.blocks[0]
    assert torch.equal(b0(x), b1(x))  # up is zero at the start: exactly the original block
    branch = b1.mlp.branch
    randomize(branch)
    x1 = x + b0.attn(b0.norm1(x))
    side = F.linear(F.relu(F.linear(F.layer_norm(x1, (64,), branch.ln.weight, branch.ln.bias, 1e-5),
                                    branch.down.weight, branch.down.bias)), branch.up.weight, branch.up.bias)
    hand = x1 + b0.mlp(b0.norm2(x1)) + branch.scale * side
    torch.testing.assert_close(b1(x), hand)


@pytest.mark.parametrize("name", ["timm_vit_tiny", "clip_vit_tiny"])
def test_lora_adds_s_x_a_b_to_query_and_value_only(name):
    plain, tuned = model(name), model(name, mode="lora", lora_alpha=3.0)
    parts = peft.vit_parts(tuned.features).parts[0]
    module, wname, bname = parts.qkv
    lora = module.parametrizations[wname][0]
    randomize(lora)
    w0 = getattr(peft.vit_parts(plain.features).parts[0].qkv[0], wname)
    b = getattr(module, bname)
    x = tokens()
    s = 3.0 / 2  # lora_alpha / r
    q, k, v = F.linear(x, w0, b).chunk(3, dim=-1)
    hand = torch.cat([q + s * (x @ lora.a_q @ lora.b_q), k, v + s * (x @ lora.a_v @ lora.b_v)], dim=-1)
    torch.testing.assert_close(F.linear(x, getattr(module, wname), b), hand)


def test_lora_starts_as_the_original_attention_in_open_clips_multihead_attention():
    plain, tuned = model("clip_vit_tiny"), model("clip_vit_tiny", mode="lora")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(plain.features(x), tuned.features(x))
    randomize(tuned.features.net.transformer.resblocks[0].attn.parametrizations.in_proj_weight[0])
    assert not torch.allclose(plain.features(x), tuned.features(x))  # the update reaches the attention


def test_ssf_scales_and_shifts_each_linear_and_layernorm_output():
    plain, tuned = model(), model(mode="ssf")
    b0, b1 = plain.features.net.blocks[0], tuned.features.net.blocks[0]
    x = tokens()
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "norm1", "norm2"):
        layer0, layer1 = b0.get_submodule(name), b1.get_submodule(name)
        ssf = layer1.parametrizations.bias[0].ssf
        torch.testing.assert_close(layer1(x), ssf.scale * layer0(x) + ssf.shift)
    fc2_0, fc2_1 = b0.mlp.fc2, b1.mlp.fc2
    h = torch.randn(2, 5, fc2_0.in_features)
    ssf = fc2_1.parametrizations.bias[0].ssf
    torch.testing.assert_close(fc2_1(h), ssf.scale * fc2_0(h) + ssf.shift)


def _timm_tokens(net, images):
    x = net.norm_pre(net._pos_embed(net.patch_embed(images)))
    return x


def test_vpt_shallow_appends_prompts_once_and_the_pooled_token_is_the_class_token():
    plain, tuned = model(), model(mode="vpt_shallow")
    net0, net1 = plain.features.net, tuned.features.net
    images = torch.randn(2, 3, 32, 32)
    prompts = net1.blocks[0].prompts.tokens
    x = torch.cat([_timm_tokens(net0, images), prompts.expand(2, -1, -1)], dim=1)
    for block in net0.blocks:
        x = block(x)
    hand = net0.forward_head(net0.norm(x[:, :-3]), pre_logits=True)
    torch.testing.assert_close(tuned.features(images), hand)
    assert [b.prompts is not None for b in net1.blocks] == [True] + [False] * (len(net1.blocks) - 1)


def test_vpt_deep_replaces_the_prompts_at_every_block_in_open_clip():
    plain, tuned = model("clip_vit_tiny"), model("clip_vit_tiny", mode="vpt_deep")
    v0, v1 = plain.features.net, tuned.features.net
    images = torch.randn(2, 3, 32, 32)
    x = v0._embeds(images)
    n = x.shape[1]
    for block, wrapped in zip(v0.transformer.resblocks, v1.transformer.resblocks, strict=True):
        x = torch.cat([x[:, :n], wrapped.prompts.tokens.expand(2, -1, -1)], dim=1)
        x = block(x)
    hand = v0.ln_post(x[:, :n])[:, 0]
    torch.testing.assert_close(tuned.features(images), hand)


# ------------------------------------------------------------------------------ initialisations and sizes


def test_initialisations_are_lifts():
    torch.manual_seed(0)
    b = peft.Bottleneck(768, 64, scaled=True)
    assert not b.up.weight.any() and not b.up.bias.any() and not b.down.bias.any() and b.scale.item() == 1.0
    gain = math.sqrt(2.0 / (1 + 5))  # kaiming_normal_(a=sqrt(5)), fan_in 768
    assert b.down.weight.std().item() == pytest.approx(gain / math.sqrt(768), rel=0.05)
    lora = peft.LoRAQV(768, 16, 1.0)
    assert not lora.b_q.any() and not lora.b_v.any() and lora.scaling == 1 / 16
    assert lora.a_q.abs().max() <= 1 / math.sqrt(16) and lora.a_q.abs().max() > 0.95 / math.sqrt(16)
    p = peft.Prompts(100, 768, (16, 16))
    bound = math.sqrt(6 / (3 * 16 * 16 + 768))
    assert p.tokens.abs().max() <= bound and p.tokens.abs().max() > 0.95 * bound
    ssf = peft.SSF(20000)
    assert ssf.scale.mean().item() == pytest.approx(1.0, abs=1e-3) and ssf.scale.std().item() == pytest.approx(0.02, rel=0.05)
    assert ssf.shift.mean().item() == pytest.approx(0.0, abs=1e-3) and ssf.shift.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("classes, blocks, dim", [(100, 12, 4), (1000, 12, 32), (8142, 12, 256), (365, 12, 8),
                                                  (10, 2, 2), (10, 24, 1)])
def test_adapter_dim_zero_is_lifts_rule(classes, blocks, dim):
    assert peft.default_dim(classes, blocks) == dim


# ------------------------------------------------------------------------------ what trains


# clip_vit_tiny by hand: width 64, MLP 256, 2 blocks, 10 classes (classifier 64 x 10 + 10 = 650); r 2, 3 prompts
HAND = {
    "full": 113_664 + 650,
    "linear": 650,
    "bias": 2 * (64 + 192 + 64 + 64 + 256 + 64) + 650,  # ln_1, in_proj, out_proj, ln_2, c_fc, c_proj
    "layernorm": 2 * 4 * 64 + 650,
    "vpt_shallow": 3 * 64 + 650,
    "vpt_deep": 2 * 3 * 64 + 650,
    "adapter": 2 * (2 * 64 + 64 * 2 + 2 + 2 * 64 + 64) + 650,  # LN, down, up
    "adaptformer": 2 * (2 * 64 + 64 * 2 + 2 + 2 * 64 + 64 + 1) + 650,  # and the scale
    "lora": 2 * 2 * (64 * 2 + 2 * 64) + 650,  # A and B of q and v
    "ssf": 2 * 2 * (192 + 64 + 256 + 64 + 64 + 64) + 650,  # qkv, out, fc1, fc2, ln_1, ln_2
}


@pytest.mark.parametrize("mode", sorted(HAND))
def test_each_mode_trains_what_it_says_counted_by_hand(mode):
    m = model("clip_vit_tiny", mode if mode in peft.STRUCTURAL else None)
    peft.freeze(m, mode)
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == HAND[mode]
    assert {"classifier.weight", "classifier.bias"} <= trained
    features = trained - {"classifier.weight", "classifier.bias"}
    if mode == "bias":
        assert features and all(n.endswith("bias") and ".resblocks." in n for n in features)
    elif mode == "layernorm":
        assert features and all(".ln_" in n for n in features)
    elif mode in peft.STRUCTURAL:
        tuned = {n for mod_name, mod in m.named_modules() if isinstance(mod, peft.TUNING_MODULES)
                 for n, _ in mod.named_parameters(prefix=mod_name)}
        assert features == tuned
    elif mode == "linear":
        assert not features


def test_a_mode_that_does_not_fit_the_backbone_is_named():
    cnn = backbones.get("small_cnn")(10, 1)
    assert "is not one" in peft.problems(cnn, "lora", "small_cnn")[0]
    assert "no LayerNorms" in peft.problems(cnn, "layernorm", "small_cnn")[0]
    assert peft.problems(cnn, "bias", "small_cnn") == []  # BatchNorm biases
    experts = backbones.get("small_cnn_3experts")(10, 1)
    assert "several experts" in peft.problems(experts, "linear", "small_cnn_3experts")[0]


# ------------------------------------------------------------------------------ through the engine


def _spec(mode: str, backbone: str, epochs: int = 2):
    sets = ["data.imbalance=100"] + ([f"train.tuning={mode}"] if mode != "full" else [])
    sets += ["train.adapter_dim=2"] if mode in ("adapter", "adaptformer", "lora") else []
    sets += ["train.vpt_len=3"] if mode.startswith("vpt") else []
    return resolve("ce", "digits_lt", backbone=backbone, epochs=epochs, sets=sets)


def _opts() -> RunOptions:
    return RunOptions(device="cpu", live_progress=False)


MODES = [("full", "timm_vit_tiny"), ("linear", "clip_vit_tiny"), ("bias", "timm_vit_tiny"),
         ("layernorm", "clip_vit_tiny"), ("vpt_shallow", "timm_vit_tiny"), ("vpt_deep", "clip_vit_tiny"),
         ("adapter", "timm_vit_tiny"), ("adaptformer", "clip_vit_tiny"), ("lora", "timm_vit_tiny"),
         ("ssf", "clip_vit_tiny")]


@pytest.mark.parametrize("mode, backbone", MODES)
def test_every_mode_trains_freezes_and_resumes_bit_identically(tmp_path, monkeypatch, mode, backbone):
    spec = _spec(mode, backbone)
    reference = execute(spec, Store(tmp_path / "ref"), _opts())

    save = training._save_epoch

    def interrupted(rd, ctx, model, opt, selection, row, log=None):  # stopped after epoch 1's checkpoint
        save(rd, ctx, model, opt, selection, row, log)
        raise KeyboardInterrupt

    store = Store(tmp_path / "killed")
    monkeypatch.setattr(training, "_save_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, store, _opts())
    monkeypatch.setattr(training, "_save_epoch", save)
    resumed = execute(spec, store, _opts())
    assert resumed["model_sha256"] == reference["model_sha256"]  # bit-identical weights
    for key in ("val", "test", "classifier_norms", "selected", "params"):
        assert resumed[key] == reference[key], key

    torch.manual_seed(spec.seed)  # the model as the run built it, before training
    start, _ = build_run_model(spec, 10, 1, None, False)
    peft.freeze(start, mode)
    final = torch.load(store.run_dir(spec).model_file, weights_only=True)
    trained = {n for n, p in start.named_parameters() if p.requires_grad}
    before = start.state_dict()
    assert before.keys() == final.keys()
    changed = {n for n in before if not torch.equal(before[n], final[n])}
    assert changed <= trained  # what the mode freezes is bit-for-bit what the run started from
    assert "classifier.weight" in changed
    if mode != "linear":  # and the backbone's part of the mode did train
        assert changed - {"classifier.weight", "classifier.bias"}
    assert reference["params"]["trainable"] == sum(p.numel() for p in start.parameters() if p.requires_grad)
    assert reference["params"]["total"] == sum(p.numel() for p in start.parameters())
    if backbone == "clip_vit_tiny":
        assert reference["params"]["trainable"] == HAND[mode]
        assert reference["params"]["text_tower"] == 1_610_017


def test_a_tuned_stage1_run_gives_its_modules_to_the_stage2_run_and_ltbench_eval(tmp_path):
    from ltbench.cli.eval import load_model

    spec = resolve("crt", "digits_lt", backbone="clip_vit_tiny", epochs=1,
                   sets=["data.imbalance=100", "stage1.tuning=lora", "stage1.adapter_dim=2", "stage2.epochs=1"])
    store = Store(tmp_path)
    result = execute(spec, store, _opts())
    assert result["method_record"]["tuning_modules"]["tuning"] == "lora"
    assert result["params"]["trainable"] == 650  # stage 2: the classifier
    parent = store.run_dir(spec.parent_spec())
    assert json.loads(parent.result_file.read_text())["params"]["trainable"] == HAND["lora"]
    rd = store.run_dir(spec)
    from ltbench.registry import benchmarks

    splits = benchmarks.get("digits_lt")().load(spec.data, training.default_data_root(), False, None)
    m = load_model(rd, rd.spec(), result, splits, torch.device("cpu"))
    assert any(isinstance(x, peft.LoRAQV) for x in m.modules())


def test_default_tuning_keeps_every_run_id_and_a_mode_changes_it():
    assert resolve("ce", "digits_lt").run_id == "1b3fa6222eb2"
    assert resolve("ce", "digits_lt", sets=["train.tuning=full"]).run_id == "1b3fa6222eb2"
    ids = {resolve("ce", "digits_lt", backbone="clip_vit_tiny", sets=[f"train.tuning={m}"]).run_id
           for m in ("full", "linear", "bias", "lora")}
    assert len(ids) == 4
    a = resolve("ce", "digits_lt", backbone="clip_vit_tiny", sets=["train.tuning=lora"])
    b = resolve("ce", "digits_lt", backbone="clip_vit_tiny", sets=["train.tuning=lora", "train.adapter_dim=8"])
    assert a.run_id != b.run_id and a.stages["train"]["adapter_dim"] == 0 and "vpt_len" not in a.stages["train"]


def test_a_mode_the_backbone_cannot_take_is_refused_before_any_record(tmp_path):
    from ltbench.api import run

    for sets, message in ([["train.tuning=adapter"], "adds modules to a ViT"],
                          [["train.tuning=layernorm"], "has no LayerNorms"],
                          [["train.vpt_len=4"], "ignores vpt_len"]):
        with pytest.raises(LtbenchError, match=message):
            run(method="ce", backbone="small_cnn", set=sets, epochs=1, results=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigkill_mid_run_resumes_a_tuned_run_to_the_same_model(tmp_path):
    cmd = [sys.executable, "-m", "ltbench.cli.app", "run", "-m", "ce", "-b", "clip_vit_tiny", "--epochs", "4",
           "--device", "cpu", "--set", "data.imbalance=100", "--set", "train.tuning=adaptformer"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    ref = subprocess.run(cmd + ["--results", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref" / "runs").glob("*/*/*"))
    proc = subprocess.Popen(cmd + ["--results", str(tmp_path / "k")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "k" / "runs" / "digits_lt" / "ce" / ref_dir.name
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "checkpoint.pt.sha256").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "DONE").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(cmd + ["--results", str(tmp_path / "k")], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    a, b = (json.loads((d / "result.json").read_text()) for d in (ref_dir, run_dir))
    assert a["model_sha256"] == b["model_sha256"] and a["test"] == b["test"]
