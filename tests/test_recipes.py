"""Recipes that follow a code base, one setting per difference: `--recipe official` (the WB authors' code),
linear lr scaling, the test set evaluated only where a reported number needs it, and keys added to the
spec without changing any earlier run id."""

import dataclasses
import math

import pytest
import torch

from ltbench.engine.training import RunOptions, effective_lr, execute, lr_factor
from ltbench.results.store import Store
from ltbench.results.tables import build_table
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import engine_defaults

OPTS = RunOptions(device="cpu", live_progress=False)

# Run ids from before the keys of schema.SINCE existed (the README's quickstart, status output).
EARLIER_IDS = {("ce", "digits_lt"): "1b3fa6222eb2", ("wb", "digits_lt"): "102927cd5958",
               ("tau_norm", "digits_lt"): "0d61197b469b", ("l2_norm", "digits_lt"): "286228e42c67",
               ("ce", "cifar100_lt"): "4987f1f78c58"}


def test_added_keys_leave_earlier_run_ids_unchanged():
    for (method, bench), run_id in EARLIER_IDS.items():
        spec = resolve(method, bench)
        assert spec.run_id == run_id, (method, bench)
    spec = resolve("ce", "digits_lt")
    assert spec.stages["train"]["lr_update"] == "step" and "lr_update" not in spec.canonical()["stages"]["train"]
    assert resolve("ce", "digits_lt", sets=["train.lr_update=epoch"]).run_id != spec.run_id


def test_official_recipe_labels_every_difference_from_the_paper():
    spec = resolve("wb", "cifar100_lt", recipe="official")
    parent = spec.parent_spec()
    expected = {  # key: (value, origin) in the stage-1 run (train.*, data.*) and the WB run (stage2.*)
        "train.epochs": (320, "recipe official"), "train.select": ("test", "recipe official"),
        "train.lr_update": ("epoch", "recipe official"), "train.precision": ("fp32", "recipe official"),
        "data.subset": ("first", "recipe official"), "data.normalization": ("wb_code", "recipe official"),
        "data.report": ("test_flip_avg", "recipe official"), "backbone": ("resnet34_cifar", "recipe official"),
        "stage2.augment": (True, "method wb"), "stage2.frozen_bn": ("train", "method wb"),
        "stage2.lr_update": ("epoch", "recipe official"), "stage2.precision": ("fp32", "recipe official"),
        "stage2.cb_form": ("softmax_bce", "method wb"), "stage2.maxnorm_every": ("epoch", "method wb"),
        "stage2.select": ("test", "method wb"),
    }
    for key, (value, origin) in expected.items():
        run = spec if key.startswith("stage2.") else parent
        where, _, name = key.partition(".")
        actual = run.backbone if key == "backbone" else (run.data if where == "data" else run.stages[where])[name]
        assert (actual, run.origins[key]) == (value, origin), key
    tau = resolve("tau_norm", "cifar100_lt", recipe="official").stages["posthoc"]
    assert (tau["tau_min"], tau["tau_max"], tau["keep_bias"]) == (1.9, 1.9, True)
    assert resolve("l2_norm", "cifar100_lt", recipe="official").stages["posthoc"]["tau_min"] == 1.0
    # one difference at a time: each is a setting of the paper recipe too
    one = resolve("wb", "cifar100_lt", sets=["stage2.frozen_bn=train", "stage2.augment=true"])
    assert one.recipe == "paper" and one.stages["stage2"]["frozen_bn"] == "train"


def test_cosine_stepped_once_per_epoch_as_the_wb_code():
    hp = {**engine_defaults(), "epochs": 10, "lr_update": "epoch"}
    assert lr_factor(hp, 0.0) == lr_factor(hp, 0.99) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))
    assert 0.01 * lr_factor(hp, 0.0) == pytest.approx(0.009755, abs=1e-6)  # REFERENCE.md: epoch 0 at 0.009755
    assert lr_factor(hp, 9.5) == pytest.approx(0.0, abs=1e-12)  # the last epoch runs at lr 0
    assert lr_factor({**hp, "lr_update": "step"}, 0.0) == 1.0


def test_linear_lr_scaling_is_recorded(tmp_path):
    spec = resolve("ce", "digits_lt", epochs=2, sets=["train.lr_scaling=linear", "train.base_batch=32"])
    assert effective_lr(spec.stages["train"]) == pytest.approx(0.05 * 64 / 32)
    result = execute(spec, Store(tmp_path), OPTS)
    assert result["method_record"]["train_effective_lr"] == pytest.approx(0.1)
    assert result["method_record"]["train_global_batch"] == 64
    first = Store(tmp_path).run_dir(spec).metrics()[0]
    assert first["lr"] == pytest.approx(0.1 * lr_factor(spec.stages["train"], 1 - 1 / 6), rel=1e-6)


def test_test_set_only_where_a_reported_number_needs_it(tmp_path):
    spec = resolve("ce", "digits_lt", epochs=3)
    lean = execute(spec, Store(tmp_path / "a"), OPTS)
    full = execute(spec, Store(tmp_path / "b"), dataclasses.replace(OPTS, test_every_epoch=True))
    for key in ("val", "test", "test_flip_avg", "selected", "classifier_norms"):
        assert lean[key] == full[key], key
    assert [m["test_top1"] for m in Store(tmp_path / "a").run_dir(spec).metrics()] == [None] * 3
    assert all(m["test_top1"] is not None for m in Store(tmp_path / "b").run_dir(spec).metrics())
    on_test = resolve("ce", "digits_lt", epochs=2, sets=["train.select=test"])
    execute(on_test, Store(tmp_path / "c"), OPTS)
    assert all(m["test_top1"] is not None for m in Store(tmp_path / "c").run_dir(on_test).metrics())


def test_frozen_backbone_in_train_mode_updates_its_batchnorm(tmp_path):
    store = Store(tmp_path)
    spec = resolve("wb", "digits_lt", epochs=2, sets=["stage2.epochs=1", "stage2.frozen_bn=train",
                                                      "stage2.augment=true"])
    result = execute(spec, store, OPTS)
    record = result["method_record"]
    assert record["stage2_path"] == ("frozen_backbone_per_epoch (augment true, BatchNorm in train mode, running "
                                     "statistics updated)")
    assert "final_eval" not in record  # the backbone changed: no cached features for the report
    before = torch.load(store.run_dir(spec.parent_spec()).model_file, weights_only=True)
    after = torch.load(store.run_dir(spec).model_file, weights_only=True)
    stats = [k for k in before if k.endswith("running_mean")]
    assert stats and any(not torch.equal(before[k], after[k]) for k in stats)
    weights = [k for k in before if k.startswith("features.") and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights)  # frozen: no gradient step


def test_tau_norm_keeps_the_bias_under_the_wb_code(tmp_path):
    store = Store(tmp_path)
    bias = {}
    for name, sets in (("kept", ["posthoc.keep_bias=true"]), ("dropped", [])):
        spec = resolve("tau_norm", "digits_lt", epochs=2, sets=sets)
        execute(spec, store, OPTS)
        bias[name] = torch.load(store.run_dir(spec).model_file, weights_only=True)["classifier.bias"]
    assert bias["kept"].abs().sum() > 0 and bias["dropped"].abs().sum() == 0


def test_cifar100_can_take_cifar10_normalisation():
    from ltbench.datasets.cifar_lt import Cifar10LT, Cifar100LT

    b = Cifar100LT()
    assert b.normalization({"normalization": "cifar10"}) == {"mean": Cifar10LT.mean, "std": Cifar10LT.std}
    assert b.normalization({}) == {"mean": Cifar100LT.mean, "std": Cifar100LT.std}


def _record(spec, test, flip, rule):
    per = {"top1": test, "many": test, "medium": test, "few": test, "class_mean": test}
    return {"run_id": spec.run_id, "spec": spec.canonical(), "label": spec.label(), "benchmark": spec.benchmark,
            "method": spec.method, "seed": spec.seed, "val": {"class_mean": 50.0}, "test": per,
            "test_flip_avg": {**per, "top1": flip, "many": flip, "medium": flip, "few": flip},
            "classifier_norms": [1.0, 2.0], "selected": {"rule": rule}, "method_record": {}}


def test_tables_say_how_runs_were_selected_and_what_they_report():
    official = resolve("ce", "cifar100_lt", recipe="official")
    t = build_table([_record(official, 40.0, 41.0, "test")], benchmarks=["cifar100_lt"])
    assert t["title"] == "CIFAR-100-LT IR100 (first-n subset): test top-1 (%), checkpoints selected on test †"
    cell = t["rows"]["ce"]["CIFAR-100-LT IR100 (first-n subset)"]
    assert cell["all"]["mean"] == 41.0 and cell["flip_averaged"]
    assert any(n.startswith("‡: test accuracy averaged over each image and its mirror") for n in t["notes"])
    paper = resolve("ce", "cifar100_lt")
    t = build_table([_record(paper, 40.0, 41.0, "val")], benchmarks=["cifar100_lt"])
    assert t["title"].endswith("selected on validation") and t["rows"]["ce"]["CIFAR-100-LT IR100"]["all"]["mean"] == 40
