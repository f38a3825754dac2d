"""Every built-in method declares its own keys as typed settings (``Method.settings``): each key its
hparams() (and data_hparams()) give that is not the engine's, with the kind of every value it gives, a
default that passes its own check, and a range or choices that --set values are refused by before anything
runs, naming the key once."""

import json
import re

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks, methods
from ltbench.spec.recipes import RECIPES
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import BY_KEY, kind_of

BUILTIN = ["ce", "cb", "focal", "cb_focal", "ldam_drw", "logit_adj", "balanced_softmax", "logit_adj_posthoc", "wb",
           "crt", "lws", "tau_norm", "l2_norm", "mislas", "disalign", "sade", "ride", "bcl", "lift", "zeroshot"]
FAMILIES = sorted({f for table in RECIPES.values() for f in table})
IMBALANCES = (10.0, 20.0, 50.0, 100.0, 200.0)


def own_values(name):
    """(stage, key) -> every value the method gives its own key (not an engine key) under any recipe,
    benchmark family, and benchmark and imbalance ratio (data_hparams), as check_hparam_names enumerates."""
    m = methods.get(name)()
    out = {}
    for stage in m.stages:
        layers = [m.hparams(stage, recipe, family) for recipe in RECIPES for family in FAMILIES]
        for recipe in RECIPES:
            for bench in benchmarks.names():
                params = dict(benchmarks.get(bench)().params)
                for imbalance in (IMBALANCES if "imbalance" in params else (None,)):
                    data = {**params, **({"imbalance": imbalance} if imbalance is not None else {})}
                    layers.append(m.data_hparams(stage, recipe, bench, data))
        for values in layers:
            for key, value in values.items():
                if key not in BY_KEY:
                    out.setdefault((stage, key), []).append(value)
    return out


def declared(name):
    return {s.key: s for s in methods.get(name).settings}


def test_the_builtin_list_is_every_builtin_method():
    builtin = {n for n in methods.names() if methods.get(n).__module__.startswith("ltbench.methods.")}
    assert builtin == set(BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_own_key_is_declared_with_the_kind_of_its_values(name):
    own = declared(name)
    values = own_values(name)
    for (stage, key), vs in values.items():
        assert key in own, f"{name}: {stage}.{key} is not declared in {methods.get(name).__name__}.settings"
        for v in vs:
            # a --set of the same value must give the same Python type (else the run id would change)
            assert kind_of(v) == own[key].kind, f"{name}: {stage}.{key}={v!r} is not a {own[key].kind}"
            assert own[key].problem(v) is None, f"{name}: its own {stage}.{key}={v!r} is refused"
    assert set(own) <= {k for _, k in values}, f"{name} declares keys it never gives"


@pytest.mark.parametrize("name", BUILTIN)
def test_declarations_are_complete_and_consistent(name):
    m = methods.get(name)()
    keys = [s.key for s in m.settings]
    assert len(keys) == len(set(keys))
    paper = {k: v for st in m.stages for k, v in m.hparams(st, "paper", "cifar").items()}
    for s in m.settings:
        assert s.key not in BY_KEY, f"{name} redeclares the engine's {s.key}"
        assert s.problem(s.default) is None, f"{name}: default {s.key}={s.default!r} fails its own check"
        assert kind_of(s.default) == s.kind
        assert s.help and "\n" not in s.help and s.group != "method", s
        assert s.choices or s.kind in ("bool", "str") or s.low is not None or s.high is not None \
            or s.key == "diversity_factor", f"{name}: {s.key} says no range"  # lambda_div takes any sign
        if s.key in paper:  # the method's usual default: the paper recipe on CIFAR
            assert paper[s.key] == s.default and type(paper[s.key]) is type(s.default), (name, s.key)


def test_shared_keys_are_declared_once():
    assert methods.get("balanced_softmax").settings == methods.get("logit_adj").settings
    assert declared("cb")["beta"] is declared("wb")["beta"] is declared("ride")["beta"] is declared("ldam_drw")["beta"]
    assert declared("cb_focal")["focal_gamma"] is declared("focal")["focal_gamma"]
    assert declared("ride")["max_m"] is declared("ldam_drw")["max_m"]
    l2, tau = declared("l2_norm"), declared("tau_norm")
    assert (l2["tau_min"].default, l2["tau_max"].default, tau["tau_min"].default, tau["tau_max"].default) == \
        (1.0, 1.0, 0.0, 2.0)
    for name in ("ce", "crt", "lws"):  # nothing of their own: engine keys only
        assert methods.get(name).settings == ()


# (method, benchmark, --set values, the one problem the error names)
BAD = [
    ("cb", "digits_lt", ["train.beta=1.5"], "train.beta=1.5: must lie in [0, 1)"),
    ("cb", "digits_lt", ["train.cb_form=sigmoid"], "train.cb_form='sigmoid': must be one of softmax, softmax_bce"),
    ("focal", "digits_lt", ["train.focal_gamma=-1"], "train.focal_gamma=-1.0: must not be negative"),
    ("cb_focal", "digits_lt", ["train.beta=-0.1"], "train.beta=-0.1: must lie in [0, 1)"),
    ("cb_focal", "digits_lt", ["train.focal_gamma=-0.5"], "train.focal_gamma=-0.5: must not be negative"),
    ("ldam_drw", "digits_lt", ["train.max_m=-0.1"], "train.max_m=-0.1: must not be negative"),
    ("ldam_drw", "digits_lt", ["train.s=0"], "train.s=0.0: must be positive"),
    ("ldam_drw", "digits_lt", ["train.drw_start=1.5"], "train.drw_start=1.5: must lie in [0, 1]"),
    ("logit_adj", "digits_lt", ["train.tau=-1"], "train.tau=-1.0: must not be negative"),
    ("balanced_softmax", "digits_lt", ["train.tau=-1"], "train.tau=-1.0: must not be negative"),
    ("logit_adj_posthoc", "digits_lt", ["posthoc.tau=-0.5"], "posthoc.tau=-0.5: must not be negative"),
    ("wb", "digits_lt", ["stage2.beta=1.5"], "stage2.beta=1.5: must lie in [0, 1)"),
    ("wb", "digits_lt", ["stage2.loss=focal"], "stage2.loss='focal': must be one of ce, cb"),
    ("wb", "cifar100_lt", ["stage2.cb_form=bce"], "stage2.cb_form='bce': must be one of softmax, softmax_bce"),
    ("tau_norm", "digits_lt", ["posthoc.tau_step=0"], "posthoc.tau_step=0.0: must be positive"),
    ("tau_norm", "digits_lt", ["posthoc.tau_min=-1"], "posthoc.tau_min=-1.0: must not be negative"),
    ("l2_norm", "digits_lt", ["posthoc.tau_step=-0.1"], "posthoc.tau_step=-0.1: must be positive"),
    ("mislas", "digits_lt", ["stage2.smooth_head=1.0"], "stage2.smooth_head=1.0: must lie in [0, 1)"),
    ("mislas", "cifar10_lt", ["stage2.smooth_tail=-0.1"], "stage2.smooth_tail=-0.1: must lie in [0, 1)"),
    ("mislas", "digits_lt", ["stage2.smooth_shape=round"],
     "stage2.smooth_shape='round': must be one of concave, linear, convex"),
    ("mislas", "digits_lt", ["stage2.lr_factor=0"], "stage2.lr_factor=0.0: must be positive"),
    ("disalign", "digits_lt", ["stage2.rho=-1"], "stage2.rho=-1.0: must not be negative"),
    ("sade", "digits_lt", ["train.lam=-1"], "train.lam=-1.0: must not be negative"),
    ("sade", "digits_lt", ["train.aggregation=max"], "train.aggregation='max': must be one of self_supervised, mean"),
    ("sade", "digits_lt", ["train.tta_epochs=-1"], "train.tta_epochs=-1: must not be negative"),
    ("sade", "digits_lt", ["train.tta_batch=0"], "train.tta_batch=0: must be at least 1"),
    ("sade", "digits_lt", ["train.tta_lr=0"], "train.tta_lr=0.0: must be positive"),
    ("sade", "digits_lt", ["train.tta_min_weight=1.5"], "train.tta_min_weight=1.5: must lie in [0, 1]"),
    ("sade", "digits_lt", ["train.tta_stop_decimals=-1"], "train.tta_stop_decimals=-1: must not be negative"),
    ("ride", "digits_lt", ["train.beta=1"], "train.beta=1.0: must lie in [0, 1)"),
    ("ride", "digits_lt", ["train.max_m=-1"], "train.max_m=-1.0: must not be negative"),
    ("ride", "digits_lt", ["train.drw_start=-0.5"], "train.drw_start=-0.5: must lie in [0, 1]"),
    ("ride", "digits_lt", ["train.diversity_temperature=0"], "train.diversity_temperature=0.0: must be positive"),
    ("ride", "digits_lt", ["train.reweight_factor=1"], "train.reweight_factor=1.0: must lie in [0, 1)"),
    ("bcl", "digits_lt", ["train.temperature=0"], "train.temperature=0.0: must be positive"),
    ("bcl", "digits_lt", ["train.logit_scale=-30"], "train.logit_scale=-30.0: must be positive"),
    ("bcl", "digits_lt", ["train.ce_weight=-1"], "train.ce_weight=-1.0: must not be negative"),
    ("bcl", "digits_lt", ["train.tau=-1"], "train.tau=-1.0: must not be negative"),
    ("bcl", "digits_lt", ["train.proj_dim=0"], "train.proj_dim=0: must be at least 1"),
    ("bcl", "digits_lt", ["train.proj_hidden=-1"], "train.proj_hidden=-1: must not be negative"),
    ("bcl", "digits_lt", ["train.crop_min_scale=0"], "train.crop_min_scale=0.0: must lie in (0, 1]"),
    ("bcl", "cifar100_lt", ["train.randaug_m=11"], "train.randaug_m=11.0: must be at most 10"),
    ("bcl", "cifar100_lt", ["train.randaug_n=-1"], "train.randaug_n=-1: must not be negative"),
]


@pytest.mark.parametrize("method, benchmark, sets, problem", BAD, ids=[f"{m}-{s[0]}" for m, _, s, _ in BAD])
def test_an_out_of_range_set_is_refused_naming_the_key_once(method, benchmark, sets, problem):
    with pytest.raises(LtbenchError) as exc:
        resolve(method, benchmark, sets=sets)
    message = str(exc.value)
    assert problem in message, message
    assert message.count(problem.split("=")[0] + "=") == 1, message  # the schema's message only, not check()'s too


def test_a_bad_type_is_refused_by_the_declared_kind():
    with pytest.raises(LtbenchError, match=r"train.tta_batch=1.5: expected an integer"):
        resolve("sade", "digits_lt", sets=["train.tta_batch=1.5"])
    with pytest.raises(LtbenchError, match=r"train.tta_stop_decimals=True: expected an integer"):
        resolve("sade", "digits_lt", sets=["train.tta_stop_decimals=true"])
    with pytest.raises(LtbenchError, match=r"train.cosine='yes': expected true or false"):
        resolve("bcl", "digits_lt", sets=["train.cosine=yes"])


def test_what_check_still_says_ties_keys_together():
    with pytest.raises(LtbenchError) as exc:
        resolve("tau_norm", "digits_lt", sets=["posthoc.tau_min=1.5", "posthoc.tau_max=1"])
    assert "posthoc.tau_min=1.5: must not exceed posthoc.tau_max=1" in str(exc.value)
    with pytest.raises(LtbenchError, match=r"posthoc.select='last': must be val or test"):
        resolve("tau_norm", "digits_lt", sets=["posthoc.select=last"])
    with pytest.raises(LtbenchError, match="bcl applies its own RandAugment"):
        resolve("bcl", "cifar100_lt", sets=["train.autoaugment=randaugment"])


def _text(v):
    """A value as a user types it after --set: a whole float without its ".0" (typed back to a float)."""
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, (bool, list)) else str(v)


@pytest.mark.parametrize("name", BUILTIN)
def test_a_set_of_each_declared_key_at_its_value_keeps_the_run_id(name):
    base = resolve(name, "cifar100_lt")
    own = declared(name)
    for stage, hp in base.stages.items():
        for key in sorted(set(hp) & set(own)):
            under = own[key].read_under  # a key that its condition leaves unread is refused by --set (tested apart)
            if under and hp[under[0]] not in under[1]:
                continue
            again = resolve(name, "cifar100_lt", sets=[f"{stage}.{key}={_text(hp[key])}"])
            assert again.run_id == base.run_id, (stage, key, hp[key], again.stages[stage][key])
            assert type(again.stages[stage][key]) is type(hp[key])


def test_wb_dry_run_shows_every_stage2_key(tmp_path):
    r = CliRunner().invoke(app, ["run", "-m", "wb", "--dry-run", "--results", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    shown = r.output.split("\nrun 2/2  wb ", 1)[1]  # the wb run's lines, after its stage-1 run's
    assert re.search(r"^\s+stage2\s+method wb:", shown, re.M), r.output
    for key in resolve("wb", "digits_lt").stages["stage2"]:
        assert re.search(rf"(?<![\w.]){key}=", shown), f"stage2.{key} is not shown:\n{r.output}"
    assert not (tmp_path / "res").exists()


def test_wb_dry_run_refuses_an_out_of_range_beta(tmp_path):
    r = CliRunner().invoke(app, ["run", "-m", "wb", "--set", "stage2.beta=1.5", "--dry-run",
                                 "--results", str(tmp_path / "res")])
    assert r.exit_code == 2 and "stage2.beta=1.5: must lie in [0, 1)" in r.output, r.output
